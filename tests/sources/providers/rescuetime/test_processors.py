"""RescueTime's processor against recorded payloads (fixtures/, from RescueTime's Analytic Data
API and Daily Summary Feed documentation): hourly activity rows and daily summaries become
records; what does not fit is quarantined with a reason that names fields, never values."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ingestion.fence import data_key_ensure
from ingestion.storage import page_store
from sources.providers.rescuetime.processors import page_process
from tests.factories import UserFactory
from tests.sources.providers.kit import fixture, quarantine_reasons

ID = "rescuetime"
SECRET = "after my chemo session"


def test_hourly_activity_rows_become_productivity_hours():
    page = page_process("hours", fixture(ID, "anapi_data_interval_activity"))
    assert page.quarantined == [] and page.removed == []
    first, second, third = page.records
    assert first.kind == "productivity_hour"
    assert first.external_id == "2026-09-05T20:00:00|youtube.com"
    assert first.occurred_at == datetime(2026, 9, 5, 20, tzinfo=UTC)
    assert first.data == {
        "hour": "2026-09-05T20:00:00",
        "seconds": 1152,
        "activity": "youtube.com",
        "category": "Video",
        "productivity": -2,
        # RescueTime's answer alone (a page kept before pages named their zone): read as UTC.
        "utc_offset_min": 0,
    }
    # Two activities in the same hour are two records.
    assert second.occurred_at == first.occurred_at and second.external_id != first.external_id
    assert third.data["productivity"] == 0


@pytest.mark.parametrize("name", ["anapi_data_rank_overview", "anapi_data_interval_productivity"])
def test_a_report_without_the_activity_columns_is_quarantined_whole(name):
    payload = fixture(ID, name)
    page = page_process("hours", payload)
    assert page.records == []
    (quarantined,) = page.quarantined
    assert quarantined.reason.startswith("productivity_hour: unexpected columns")
    for row in payload["rows"]:
        for value in row:
            if isinstance(value, str) and value not in payload["row_headers"]:
                assert value not in quarantined.reason


def test_the_daily_summary_feed_becomes_productivity_days():
    page = page_process("days", fixture(ID, "daily_summary_feed"))
    assert page.quarantined == []
    newest, older = page.records
    assert newest.kind == "productivity_day" and newest.external_id == "2026-09-06"
    assert newest.occurred_at == datetime(2026, 9, 6, tzinfo=UTC)
    assert newest.data == {
        "date": "2026-09-06",
        "productivity_pulse": 71.0,
        "total_hours": 7.42,
        "very_productive_hours": 3.51,
        "distracting_hours": 2.41,
        "software_development_hours": 3.09,
        "utc_offset_min": 0,
    }
    assert older.data["total_hours"] == 5.0


def in_zone(payload, zone):
    """A page as the client keeps it: RescueTime's answer and the person's zone."""
    return {"time_zone": zone, "response": payload}


def test_hours_are_the_instants_they_began_in_the_persons_zone():
    page = page_process("hours", in_zone(fixture(ID, "anapi_data_interval_activity"), "Asia/Tokyo"))
    first = page.records[0]
    # 20:00 in Tokyo (UTC+9) is 11:00 UTC; the key stays RescueTime's local hour.
    assert first.occurred_at == datetime(2026, 9, 5, 11, tzinfo=UTC)
    assert first.external_id == "2026-09-05T20:00:00|youtube.com"
    assert first.data["hour"] == "2026-09-05T20:00:00"
    assert first.data["utc_offset_min"] == 540


def test_days_begin_at_the_persons_midnight():
    page = page_process("days", in_zone(fixture(ID, "daily_summary_feed"), "America/Los_Angeles"))
    newest = page.records[0]
    # Summer time in Los Angeles: UTC-7.
    assert newest.occurred_at == datetime(2026, 9, 6, 7, tzinfo=UTC)
    assert newest.data["utc_offset_min"] == -420 and newest.data["date"] == "2026-09-06"


def test_hours_across_a_clock_change_keep_their_own_offsets():
    payload = fixture(ID, "anapi_data_interval_activity")
    row = payload["rows"][0]
    # Paris leaves summer time at 03:00 on 25 October 2026: 01:00 is UTC+2, 03:00 UTC+1, and
    # the 02:00 hour happens twice (RescueTime names it once: its first pass).
    payload["rows"] = [
        [f"2026-10-25T0{h}:00:00", *row[1:3], f"app{h}", *row[4:]] for h in (1, 2, 3)
    ]
    one, two, three = page_process("hours", in_zone(payload, "Europe/Paris")).records
    assert [r.data["utc_offset_min"] for r in (one, two, three)] == [120, 120, 60]
    assert one.occurred_at == datetime(2026, 10, 24, 23, tzinfo=UTC)
    assert two.occurred_at == datetime(2026, 10, 25, 0, tzinfo=UTC)
    assert three.occurred_at == datetime(2026, 10, 25, 2, tzinfo=UTC)


def test_a_zone_this_machine_does_not_know_reads_as_utc():
    page = page_process("days", in_zone(fixture(ID, "daily_summary_feed"), "Mars/Olympus_Mons"))
    assert page.records[0].occurred_at == datetime(2026, 9, 6, tzinfo=UTC)


def test_a_day_without_total_hours_is_quarantined_and_the_rest_kept():
    feed = fixture(ID, "daily_summary_feed")
    del feed[0]["total_hours"]
    page = page_process("days", feed)
    assert [r.external_id for r in page.records] == ["2026-09-05"]
    (quarantined,) = page.quarantined
    assert quarantined.reason == "productivity_day: missing total_hours"


def test_a_row_with_text_where_seconds_belong_is_quarantined_without_the_text():
    payload = fixture(ID, "anapi_data_interval_activity")
    payload["rows"][0][1] = SECRET
    page = page_process("hours", payload)
    assert len(page.records) == 2
    (quarantined,) = page.quarantined
    assert quarantined.kind == "productivity_hour" and SECRET not in quarantined.reason


@pytest.mark.django_db
def test_a_processor_error_is_quarantined_without_the_value(raw_db):
    person = UserFactory()
    data_key_ensure(person.pk)
    headers = [
        "Date",
        "Time Spent (seconds)",
        "Number of People",
        "Activity",
        "Category",
        "Productivity",
    ]
    payload = {"row_headers": headers, "rows": [[SECRET, 60, 1, "Journal", "Writing", 1]]}
    processed = page_process("hours", payload)
    # Python's own message quotes the value: "Invalid isoformat string: 'after my ...'".
    assert len(processed.quarantined) == 1
    page_store(
        connection=None,
        user_id=person.pk,
        provider=ID,
        stream="hours",
        processed=processed,
    )
    reasons = quarantine_reasons(raw_db, person, SECRET)
    assert reasons == ["productivity_hour: malformed item (ValueError)"]
