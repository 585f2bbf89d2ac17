"""Strava activity summaries -> workout records, against Strava's documented examples."""

from datetime import UTC, datetime

from ingestion.schemas import record_validate
from sources.providers.strava.processors import page_process
from tests.sources.providers.kit import fixture


def test_the_documented_activities_page_becomes_workouts():
    page = page_process("activities", fixture("strava", "athlete_activities__page"))
    assert not page.quarantined and not page.removed
    first, second = page.records
    assert first.kind == "workout"
    # int64 ids above 2^53 stay exact (never through a float).
    assert first.external_id == "154504250376823"
    assert first.occurred_at == datetime(2018, 5, 2, 12, 15, 9, tzinfo=UTC)
    assert first.data == {
        "sport_type": "MountainBikeRide",
        "start_time": datetime(2018, 5, 2, 12, 15, 9, tzinfo=UTC),
        "name": "Happy Friday",
        "timezone": "(GMT-08:00) America/Los_Angeles",
        "elapsed_s": 4500,
        "moving_s": 4500,
        "distance_m": 24931.4,
        "elevation_gain_m": 0,
        "average_heartrate": 140.3,
        "max_heartrate": 178,
        "calories": None,  # detailed activities only
        # utc_offset, -25200 s: Los Angeles in May (the zone's name says GMT-08:00, its winter).
        "utc_offset_min": -420,
    }
    assert second.external_id == "1234567809" and second.data["name"] == "Bondcliff"
    for record in page.records:
        assert record_validate(record) == record


def test_the_offset_comes_from_the_local_start_when_utc_offset_is_missing():
    activity = {
        "id": 8,
        "sport_type": "Run",
        "start_date": "2026-01-10T13:00:00Z",
        "start_date_local": "2026-01-10T23:30:00Z",  # Adelaide's wall clock, written with a Z
    }
    (record,) = page_process("activities", [activity]).records
    assert record.data["utc_offset_min"] == 630
    activity["start_date_local"] = "not a time"
    (record,) = page_process("activities", [activity]).records
    assert record.data["utc_offset_min"] is None
    # An offset no place has is left out, the workout kept.
    (record,) = page_process("activities", [{**activity, "utc_offset": 10**9}]).records
    assert record.data["utc_offset_min"] is None


def test_an_empty_page_gives_nothing():
    page = page_process("activities", fixture("strava", "athlete_activities__empty"))
    assert not page.records and not page.quarantined


def test_the_deprecated_type_serves_when_sport_type_is_missing():
    activity = {"id": 7, "type": "Run", "start_date": "2024-01-01T00:00:00Z"}
    (record,) = page_process("activities", [activity]).records
    assert record.data["sport_type"] == "Run" and record.data["distance_m"] is None


def test_broken_items_are_quarantined_with_reasons_that_never_hold_a_value():
    items = fixture("strava", "athlete_activities__broken_items")
    page = page_process("activities", items)
    assert [r.external_id for r in page.records] == ["12345678987654321"]
    reasons = [q.reason for q in page.quarantined]
    assert reasons == [
        "workout: id is not a positive integer",
        "workout: start_date is not a date and time",
        "workout: missing sport_type",
        "workout: distance is not a number",
        "workout: elapsed_time must not be negative",
        "workout: item is not an object",
        "workout: missing sport_type",
    ]
    assert all(q.kind == "workout" for q in page.quarantined)
    text = " ".join(reasons)
    for value in ("Secret route home", "yesterday", "5 km", "-60", "not an activity", "1234567"):
        assert value not in text


def test_a_page_that_is_not_a_list_is_quarantined_whole():
    page = page_process("activities", fixture("strava", "error__rate_limit"))
    assert not page.records
    assert [q.reason for q in page.quarantined] == ["activities: the page is not a list"]
