"""Google Health's processor against recorded dataPoints pages (fixtures/, from the Google
Health API reference): steps sum to activity days, heart-rate samples to daily ranges, sleep
sessions keep their stages; what does not fit is quarantined with a reason naming the field,
never its value. And a documented notification names the days to fetch."""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime, timedelta

import pytest

from sources.providers.fitbit.processors import page_process
from sources.providers.fitbit.webhooks import _days
from tests.sources.providers.kit import fixture

ID = "fitbit"
EST = timedelta(hours=5)  # "-18000s"


def points(name: str) -> dict:
    return copy.deepcopy(fixture(ID, name))


def test_step_intervals_sum_to_activity_days_at_the_persons_midnight():
    page = page_process("steps", points("data_points_steps"))
    assert page.quarantined == []
    first, second = page.records
    assert (first.kind, first.external_id) == ("activity_day", "2026-03-01")
    # The source's offset, "-18000s", kept in minutes.
    assert first.data == {"date": "2026-03-01", "steps": 112, "utc_offset_min": -300}
    assert first.occurred_at == datetime(2026, 3, 1, tzinfo=UTC) + EST
    assert second.data["steps"] == 2038


def test_heart_rate_samples_become_a_daily_range():
    page = page_process("heart-rate", points("data_points_heart_rate"))
    (day,) = page.records
    assert day.kind == "heart_rate_day" and day.external_id == "2026-03-01"
    assert day.data == {
        "date": "2026-03-01",
        "min_bpm": 61,
        "max_bpm": 70,
        "avg_bpm": 65.0,
        "samples": 3,
        "utc_offset_min": -300,
    }


def test_a_sleep_session_keeps_its_stages_and_its_id():
    page = page_process("sleep", points("data_points_sleep"))
    (session,) = page.records
    assert session.kind == "sleep_session" and session.external_id == "8896045106937410341"
    assert session.occurred_at == datetime(2026, 3, 1, 4, 12, tzinfo=UTC)
    assert session.data["minutes_asleep"] == 427 and session.data["minutes_awake"] == 21
    assert session.data["stages"] == {"LIGHT": 267, "DEEP": 75, "REM": 85, "AWAKE": 21}
    assert session.data["main_sleep"] is True and session.data["utc_offset_min"] == -300


def test_an_offset_no_place_has_is_left_out():
    page = points("data_points_steps")
    for point in page["dataPoints"]:
        point["steps"]["interval"]["startUtcOffset"] = "99999999s"
    first = page_process("steps", page).records[0]
    assert first.data["utc_offset_min"] is None


@pytest.mark.parametrize("stream", ["steps", "heart-rate", "sleep"])
def test_the_last_page_gives_nothing(stream):
    page = page_process(stream, points("data_points_last_page"))
    assert (page.records, page.removed, page.quarantined) == ([], [], [])


def test_a_page_without_data_points_is_quarantined_whole():
    (quarantined,) = page_process("steps", {"error": "unexpected"}).quarantined
    assert quarantined.reason == "steps: no dataPoints list"


@pytest.mark.parametrize(
    ("name", "stream", "path", "secret"),
    [
        ("data_points_steps", "steps", ("steps", "count"), "twelve thousand"),
        ("data_points_heart_rate", "heart-rate", ("heartRate", "beatsPerMinute"), "racing"),
        ("data_points_sleep", "sleep", ("sleep", "summary", "minutesAsleep"), "restless"),
    ],
)
def test_a_broken_point_is_quarantined_without_its_value(name, stream, path, secret):
    payload = points(name)
    target = payload["dataPoints"][0]
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = secret
    page = page_process(stream, payload)
    assert page.quarantined, page
    for quarantined in page.quarantined:
        assert path[-1] in quarantined.reason and secret not in quarantined.reason


def test_a_sleep_session_without_a_name_is_quarantined():
    payload = points("data_points_sleep")
    del payload["dataPoints"][0]["name"]
    (quarantined,) = page_process("sleep", payload).quarantined
    assert quarantined.reason == "sleep_session: missing name"


def test_a_documented_notification_names_the_days_to_fetch():
    data = fixture(ID, "webhook_notification_upsert")["data"]
    # The civil span ends at midnight, exclusively: one day.
    assert _days(data["intervals"]) == (date(2026, 3, 2), date(2026, 3, 2))
