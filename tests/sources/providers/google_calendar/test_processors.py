"""The Calendar processor against Google's documented payloads (fixtures/), and the error
mapping of the 410 that restarts a calendar's sync."""

from __future__ import annotations

import copy
import json
from datetime import UTC, date, datetime

import pytest
import requests

from ingestion.errors import PermanentError
from sources.providers.google_calendar.processors import calendar_key, external_id, page_process
from sources.providers.google_http import Gone, google_check
from tests.sources.providers.kit import fixture

PRIMARY = "ada.lovelace@example.com"
HOLIDAYS = "en.uk#holiday@group.v.calendar.google.com"


def page(name: str, calendar_id: str = PRIMARY) -> dict:
    return {"calendar_id": calendar_id, "items": fixture("google_calendar", name)["items"]}


def by_event(processed) -> dict:
    return {record.data["event_id"]: record for record in processed.records}


def test_timed_events_become_records_with_their_attendees():
    processed = page_process("events", page("events_first_page"))
    assert processed.quarantined == [] and processed.removed == []
    records = by_event(processed)
    review = records["4dbbd4bk2eidqa0h84urc3a9m4"]
    assert review.kind == "calendar_event"
    assert review.external_id == f"{calendar_key(PRIMARY)}:4dbbd4bk2eidqa0h84urc3a9m4"
    assert PRIMARY not in review.external_id  # the address stays out of the plaintext envelope
    start = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
    assert review.occurred_at == start
    data = review.data
    assert (data["start"], data["end"]) == (start, datetime(2026, 5, 4, 10, 0, tzinfo=UTC))
    assert data["all_day"] is False and data["time_zone"] == "Europe/London"
    assert data["utc_offset_min"] == 60  # London's summer time
    assert data["summary"] == "Project review"
    assert data["description"] == "<b>Agenda</b>: the engine's second draft."
    assert data["location"] == "Room 4.12"
    assert data["status"] == "confirmed" and data["organizer"] == PRIMARY
    assert data["calendar_id"] == PRIMARY and data["event_type"] == "default"
    assert data["html_link"].startswith("https://www.google.com/calendar/event?eid=")
    assert data["updated"] == datetime(2026, 4, 28, 9, 14, 24, 457000, tzinfo=UTC)
    assert data["recurring_event_id"] is None and data["original_start"] is None
    assert data["attendees"] == [
        {"email": PRIMARY, "response_status": "accepted", "organizer": True, "self": True},
        {"email": "charles@example.org", "response_status": "tentative", "display_name": "Charles"},
        {"email": "mary@example.net", "response_status": "needsAction", "optional": True},
    ]
    dentist = records["7k3qho2a0i1vq9p5m2c8dmb0s6"].data
    assert dentist["status"] == "tentative"
    assert dentist["description"] is None and dentist["location"] is None
    assert dentist["attendees"] == [] and dentist["time_zone"] is None
    # No zone named: the offset the dateTime is written with ("Z").
    assert dentist["utc_offset_min"] == 0


def test_a_local_time_is_read_in_the_events_time_zone():
    # Google answers with an offset; a time without one (as a request may give it, the
    # reference allows it with timeZone) is read in the event's time zone.
    local = page("events_next_page")
    for end in ("start", "end"):
        local["items"][0][end]["dateTime"] = local["items"][0][end]["dateTime"][:19]
    (record,) = page_process("events", local).records
    # 12:30 in Paris in May is 10:30 UTC.
    assert record.data["start"] == datetime(2026, 5, 6, 10, 30, tzinfo=UTC)
    assert record.data["end"] == datetime(2026, 5, 6, 11, 30, tzinfo=UTC)
    assert record.data["time_zone"] == "Europe/Paris"
    assert record.data["utc_offset_min"] == 120


def test_the_offset_is_where_the_event_happens_whatever_zone_its_time_is_written_in():
    written_in_utc = page("events_next_page")
    event = written_in_utc["items"][0]
    event["start"] = {"dateTime": "2026-01-06T14:30:00Z", "timeZone": "America/New_York"}
    event["end"] = {"dateTime": "2026-01-06T15:30:00Z", "timeZone": "America/New_York"}
    (record,) = page_process("events", written_in_utc).records
    assert record.data["start"] == datetime(2026, 1, 6, 14, 30, tzinfo=UTC)
    assert record.data["utc_offset_min"] == -300  # New York in winter


def test_an_all_day_event_keeps_its_dates_and_exclusive_end():
    (record,) = page_process("events", page("events_all_day", HOLIDAYS)).records
    assert record.data["all_day"] is True
    assert (record.data["start"], record.data["end"]) == ("2026-05-04", "2026-05-05")
    assert record.data["utc_offset_min"] is None  # a date, in no zone
    assert record.occurred_at == datetime(2026, 5, 4, tzinfo=UTC)
    assert record.external_id.startswith(f"{calendar_key(HOLIDAYS)}:")


def test_recurring_instances_name_their_series_and_a_cancelled_one_is_removed():
    processed = page_process("events", page("events_recurring_instances"))
    assert processed.quarantined == []
    records = by_event(processed)
    moved = records["0v8q1gd9ua9cs5lk8r9n1c2e3f_20260518T090000Z"].data
    assert moved["recurring_event_id"] == "0v8q1gd9ua9cs5lk8r9n1c2e3f"
    assert moved["original_start"] == datetime(2026, 5, 18, 9, 0, tzinfo=UTC)
    assert moved["start"] == datetime(2026, 5, 18, 10, 0, tzinfo=UTC)
    assert len(records) == 2
    assert processed.removed == [
        ("calendar_event", external_id(PRIMARY, "0v8q1gd9ua9cs5lk8r9n1c2e3f_20260525T090000Z"))
    ]


def test_an_incremental_page_deletes_cancelled_events_and_updates_changed_ones():
    processed = page_process("events", page("events_incremental"))
    assert processed.removed == [
        ("calendar_event", external_id(PRIMARY, "7k3qho2a0i1vq9p5m2c8dmb0s6"))
    ]
    (record,) = processed.records
    assert record.data["summary"] == "Project review (moved)"
    assert record.data["start"] == datetime(2026, 5, 4, 13, 0, tzinfo=UTC)


def test_the_same_event_id_in_two_calendars_gives_two_records():
    assert external_id(PRIMARY, "e1") != external_id(HOLIDAYS, "e1")
    assert len(external_id(PRIMARY, "x" * 1024)) < 100


def test_records_to_forget_are_removed_and_need_no_calendar():
    processed = page_process("events", {"calendar_id": None, "items": [], "forget": ["a:1", ""]})
    assert processed.removed == [("calendar_event", "a:1")]
    assert processed.quarantined == []


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            {"start": {"dateTime": "not-a-time-Secret"}},
            "calendar_event: start.dateTime is not RFC 3339",
        ),
        (
            {"start": {"dateTime": "2026-05-04T10:00:00"}},
            "calendar_event: start.dateTime has no offset and no timeZone",
        ),
        (
            {"start": {"dateTime": "2026-05-04T10:00:00", "timeZone": "Secret/Zone"}},
            "calendar_event: start.timeZone is not a known time zone",
        ),
        ({"start": {"date": "2026-5-4"}}, "calendar_event: start.date is not YYYY-MM-DD"),
        ({"start": "Secret"}, "calendar_event: start is not an object"),
        ({"start": {}}, "calendar_event: start has neither date nor dateTime"),
        ({"end": {"dateTime": "Secret"}}, "calendar_event: end.dateTime is not RFC 3339"),
        ({"id": None}, "calendar_event: id is not a string"),
        ({"updated": "Secret"}, "calendar_event: updated is not RFC 3339"),
        ({"summary": ["Secret"], "attendees": "Secret"}, None),
    ],
)
def test_bad_items_are_quarantined_with_a_reason_that_holds_no_value(change, reason):
    items = fixture("google_calendar", "events_first_page")["items"]
    broken = {**copy.deepcopy(items[0]), **change}
    processed = page_process("events", {"calendar_id": PRIMARY, "items": [broken, items[1]]})
    if reason is None:  # tolerated: unreadable optional fields are left empty
        assert len(processed.records) == 2 and processed.quarantined == []
        assert by_event(processed)[items[0]["id"]].data["summary"] == ""
        return
    assert [r.data["event_id"] for r in processed.records] == [items[1]["id"]]
    (quarantined,) = processed.quarantined
    assert quarantined.reason == reason and quarantined.kind == "calendar_event"
    assert "Secret" not in quarantined.reason and "not-a-time" not in quarantined.reason


def test_an_event_without_start_or_a_broken_item_is_quarantined():
    processed = page_process(
        "events", {"calendar_id": PRIMARY, "items": [{"id": "e1"}, "junk", {"status": "cancelled"}]}
    )
    assert processed.records == [] and processed.removed == []
    assert sorted(q.reason for q in processed.quarantined) == [
        "calendar_event: cancelled event without id",
        "calendar_event: malformed item (AttributeError)",
        "calendar_event: missing start",
    ]


@pytest.mark.parametrize("payload", [None, [], "x", {"items": [{"id": "e"}]}])
def test_a_page_that_is_not_an_events_page_is_quarantined_whole(payload):
    processed = page_process("events", payload)
    assert processed.records == [] and len(processed.quarantined) == 1


def test_the_documented_410_means_a_full_sync():
    response = requests.Response()
    response.status_code = 410
    response._content = json.dumps(
        fixture("google_calendar", "error_410_full_sync_required")
    ).encode()
    with pytest.raises(Gone) as caught:
        google_check(response, provider_name="Google Calendar")
    assert "fullSyncRequired" in caught.value.reasons
    assert isinstance(caught.value, PermanentError)


def test_fixtures_keep_googles_shapes():
    listing = fixture("google_calendar", "calendar_list")
    assert listing["kind"] == "calendar#calendarList"
    assert listing["items"][0]["id"] == PRIMARY
    first, last = (
        fixture("google_calendar", "events_first_page"),
        fixture("google_calendar", "events_next_page"),
    )
    assert "nextPageToken" in first and "nextSyncToken" not in first
    assert "nextSyncToken" in last and "nextPageToken" not in last
    assert date.fromisoformat(
        fixture("google_calendar", "events_all_day")["items"][0]["start"]["date"]
    )
