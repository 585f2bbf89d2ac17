"""Whole syncs of Google Calendar over HTTP against the sandbox: the full sync of every
calendar, paging, incremental syncs by sync token, the 410 that restarts a calendar, cancelled
events deleting their records, and records sealed in the raw documents."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import bson
import pytest
import requests
from django.utils import timezone

from ingestion.http import RetryPolicy
from ingestion.models import QuarantinedItem, SyncRun
from ingestion.runner import connection_sync
from ingestion.storage import record_decode
from sources.models import UserDataSource
from sources.providers.google_calendar.client import CalendarSyncClient
from sources.providers.google_calendar.processors import calendar_key, external_id
from sources.providers.google_calendar.sandbox import Account, _end_of
from tests.sources.providers.kit import processor_killed_on_page, sandbox_fault

pytestmark = pytest.mark.django_db(transaction=True)
Outcome = SyncRun.Outcome
NO_WAIT = RetryPolicy(sleep=lambda seconds: None)
PATIENT = RetryPolicy(sleep=lambda seconds: None, max_inplace_wait_s=60)
BACKFILL_DAYS = 14


@pytest.fixture
def window_start(monkeypatch) -> datetime:
    """A pinned backfill start, so the sandbox's own answer can be computed exactly."""
    start = (timezone.now() - timedelta(days=BACKFILL_DAYS)).replace(microsecond=0)
    monkeypatch.setattr(CalendarSyncClient, "backfill_start", lambda self: start)
    return start


def sync(connection: UserDataSource, policy: RetryPolicy = NO_WAIT) -> SyncRun:
    run = connection_sync(connection.pk, policy=policy)
    assert run is not None
    return run


def fresh(connection: UserDataSource) -> UserDataSource:
    return UserDataSource.objects.get(pk=connection.pk)


def stored(raw_db, connection: UserDataSource) -> list[dict]:
    return list(
        raw_db["external_data"].find(
            {"user": connection.user_id, "provider": "google_calendar", "kind": "calendar_event"}
        )
    )


def stored_ids(raw_db, connection: UserDataSource) -> set[str]:
    return {doc["external_id"] for doc in stored(raw_db, connection)}


def expected(email: str, since: datetime, calendar_id: str | None = None) -> set[str]:
    """What the sandbox holds now in the window: live single events and instances."""
    account = Account(email)
    ids = set()
    for calendar in account.calendars():
        if calendar_id is not None and calendar["id"] != calendar_id:
            continue
        events, _ = account.events(calendar["id"], len(account.steps()))
        for event_id, event in events.items():
            if event.get("_master") or event.get("status") == "cancelled":
                continue
            if _end_of(event) > since:
                ids.add(external_id(calendar["id"], event_id))
    return ids


def test_the_first_sync_stores_every_calendars_events_sealed(connection, window_start, raw_db):
    email = connection.sandbox_account
    want = expected(email, window_start)
    assert 20 < len(want) < 250  # one page per calendar
    run = sync(connection)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    assert run.trigger == SyncRun.Trigger.BACKFILL
    assert stored_ids(raw_db, connection) == want
    # calendarList, then one events page for each of the three calendars.
    assert (run.api_calls, run.pages, run.created, run.quarantined) == (4, 3, len(want), 0)
    after = fresh(connection)
    calendars = Account(email).calendars()
    assert set(after.cursors["events"]["calendars"]) == {calendar_key(c["id"]) for c in calendars}
    assert all(
        set(entry) == {"sync_token"} for entry in after.cursors["events"]["calendars"].values()
    )
    assert email not in str(after.cursors)  # calendar ids are digested in the cursor
    assert after.backfill_progress is None and after.records_stored == len(want)

    documents = stored(raw_db, connection)
    for document in documents:
        assert "data" not in document
        assert isinstance(document["sealed"], bson.Binary) and document["sealed"].subtype == 6
        assert email.encode() not in bson.encode(document)
    records = {
        doc["external_id"]: record_decode(doc, owner_id=connection.user_id)["data"]
        for doc in documents
    }
    instances = [r for r in records.values() if r.get("recurring_event_id")]
    assert instances and all(r["original_start"] for r in instances)
    assert any(r["start"] != r["original_start"] for r in instances)  # the moved instance
    all_day = [r for r in records.values() if r["all_day"]]
    assert all_day and all(isinstance(r["start"], str) for r in all_day)
    timed = next(r for r in records.values() if r.get("attendees"))
    assert timed["summary"].encode() not in b"".join(bson.encode(d) for d in documents)
    assert {a["email"] for a in timed["attendees"]} >= {email}


def test_a_listing_over_several_pages_is_followed_to_its_sync_token(
    connection, window_start, raw_db, monkeypatch
):
    monkeypatch.setattr(CalendarSyncClient, "events_page_size", 7)
    want = expected(connection.sandbox_account, window_start)
    run = sync(connection)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    assert run.pages > 4 and run.created == len(want)
    assert stored_ids(raw_db, connection) == want
    assert sync(connection).api_calls == 4  # nothing new: one call per calendar


def test_each_listing_asks_for_the_largest_page_the_api_allows(
    connection, window_start, monkeypatch
):
    # events.list allows 2500 per page, calendarList.list 250: a sync's cost is its round trips.
    asked: list[str] = []
    send = requests.Session.send

    def recording_send(session, request, **kwargs):
        asked.append(request.url)
        return send(session, request, **kwargs)

    monkeypatch.setattr(requests.Session, "send", recording_send)
    assert sync(connection).outcome == Outcome.SUCCESS
    sizes = {
        (urlsplit(url).path.rsplit("/", 1)[-1], parse_qs(urlsplit(url).query)["maxResults"][0])
        for url in asked
        if "maxResults=" in url
    }
    assert sizes == {("calendarList", "250"), ("events", "2500")}


def test_a_killed_full_sync_resumes_at_its_page(connection, window_start, raw_db, monkeypatch):
    from sources.providers.google_calendar.provider import GoogleCalendar

    monkeypatch.setattr(CalendarSyncClient, "events_page_size", 7)
    processor = GoogleCalendar.processor()
    processor_killed_on_page(GoogleCalendar, monkeypatch)
    killed = sync(connection)
    assert killed.outcome == Outcome.FAILED and killed.pages == 1
    entry = next(iter(fresh(connection).cursors["events"]["calendars"].values()))
    assert set(entry) == {"time_min", "page_token"}
    assert 0 < fresh(connection).backfill_progress < 1
    monkeypatch.setattr(GoogleCalendar, "processor", classmethod(lambda cls: processor))
    run = sync(connection)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    assert stored_ids(raw_db, connection) == expected(connection.sandbox_account, window_start)
    assert run.updated == 0  # no page stored twice


def test_an_incremental_sync_adds_changes_and_deletes_cancelled_events(
    connection, window_start, raw_db
):
    email = connection.sandbox_account
    assert sync(connection).outcome == Outcome.SUCCESS
    before = stored_ids(raw_db, connection)
    tokens = fresh(connection).cursors["events"]["calendars"]
    sandbox_fault(connection, "new_events")
    after = expected(email, window_start)
    assert (len(after - before), len(before - after)) == (2, 1)

    run = sync(connection)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    assert run.trigger == SyncRun.Trigger.SCHEDULE
    assert (run.created, run.updated, run.deleted) == (2, 1, 1)
    assert run.api_calls == 4
    assert stored_ids(raw_db, connection) == after
    primary = calendar_key(email)
    new_tokens = fresh(connection).cursors["events"]["calendars"]
    assert new_tokens[primary] != tokens[primary]
    # The other calendars did not change: their tokens may be reissued, nothing was stored.
    again = sync(connection)
    assert (again.api_calls, again.created, again.updated, again.deleted) == (4, 0, 0, 0)


def test_a_410_restarts_that_calendars_full_sync(connection, window_start, raw_db):
    email = connection.sandbox_account
    assert sync(connection).outcome == Outcome.SUCCESS
    want = expected(email, window_start)
    primary = expected(email, window_start, email)
    sandbox_fault(connection, "full_sync_required")
    run = sync(connection)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    # The primary calendar's token is refused: its records are dropped and listed again.
    assert (run.deleted, run.created) == (len(primary), len(primary))
    # calendarList, 410, the full listing, and the two other calendars' increments.
    assert run.api_calls == 5
    assert stored_ids(raw_db, connection) == want
    assert set(fresh(connection).cursors["events"]["calendars"][calendar_key(email)]) == {
        "sync_token"
    }


def test_a_sync_token_the_sandbox_never_issued_is_refused_with_410_and_recovered(
    connection, window_start, raw_db
):
    assert sync(connection).outcome == Outcome.SUCCESS
    cursors = fresh(connection).cursors
    for entry in cursors["events"]["calendars"].values():
        entry["sync_token"] = "forged-token"
    UserDataSource.objects.filter(pk=connection.pk).update(cursors=cursors)
    run = sync(connection)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    assert stored_ids(raw_db, connection) == expected(connection.sandbox_account, window_start)


def test_a_calendar_that_left_the_list_takes_its_records_with_it(connection, window_start, raw_db):
    assert sync(connection).outcome == Outcome.SUCCESS
    from ingestion.schemas import ProcessedPage, Record
    from ingestion.storage import page_store

    gone = "c_gone@group.calendar.google.com"
    page = ProcessedPage(
        records=[
            Record(
                kind="calendar_event",
                external_id=external_id(gone, "e1"),
                occurred_at=datetime.now(UTC),
                data={
                    "calendar_id": gone,
                    "event_id": "e1",
                    "summary": "",
                    "attendees": [],
                    "start": datetime.now(UTC),
                    "end": None,
                    "all_day": False,
                    "status": "confirmed",
                },
            )
        ]
    )
    page_store(connection=fresh(connection), stream="events", processed=page, raw_page_id=None)
    cursors = fresh(connection).cursors
    cursors["events"]["calendars"][calendar_key(gone)] = {"sync_token": "t"}
    UserDataSource.objects.filter(pk=connection.pk).update(cursors=cursors)
    run = sync(connection)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    assert run.deleted == 1
    assert external_id(gone, "e1") not in stored_ids(raw_db, connection)
    assert calendar_key(gone) not in fresh(connection).cursors["events"]["calendars"]


def test_expired_token_rate_limits_and_server_errors_are_survived(connection, window_start):
    assert sync(connection).outcome == Outcome.SUCCESS
    old_token = fresh(connection).credentials["access_token"]
    for fault in ("expire_access_token", "rate_limit", "user_rate_limit", "server_error"):
        sandbox_fault(connection, fault)
    run = sync(connection, PATIENT)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    # 401 (refresh), 429, 403 userRateLimitExceeded, 500, then the four answers.
    assert run.api_calls == 8 and run.rate_limited == 2
    assert fresh(connection).credentials["access_token"] != old_token


def test_a_per_user_rate_limit_defers_the_connection(connection, window_start):
    sandbox_fault(connection, "user_rate_limit", count=5)
    run = sync(connection)
    assert run.outcome == Outcome.DEFERRED
    assert "userRateLimitExceeded" in run.error_message
    assert fresh(connection).next_sync_at > timezone.now()


def test_malformed_events_are_quarantined_and_the_rest_stored(connection, window_start):
    sandbox_fault(connection, "malformed")
    run = sync(connection)
    assert run.outcome == Outcome.PARTIAL
    assert run.quarantined == 1
    (reason,) = QuarantinedItem.objects.filter(connection=connection).values_list(
        "reason", flat=True
    )
    assert reason == "calendar_event: start.dateTime is not RFC 3339"


def test_a_hidden_calendar_is_still_synced(connection, window_start, raw_db, monkeypatch):
    """Hidden from Google Calendar's sidebar, the calendar is still in the person's list."""
    listed = Account.calendars
    monkeypatch.setattr(
        Account, "calendars", lambda self: [{**entry, "hidden": True} for entry in listed(self)]
    )
    run = sync(connection)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    assert stored_ids(raw_db, connection) == expected(connection.sandbox_account, window_start)


def test_a_listed_calendar_whose_events_are_not_served_is_dropped_and_the_others_sync(
    connection, window_start, raw_db, monkeypatch
):
    """Deleted or unshared after the list was read: its events.list answers 404."""
    email = connection.sandbox_account
    assert sync(connection).outcome == Outcome.SUCCESS
    family = Account(email).calendars()[1]["id"]
    served = Account.calendar
    monkeypatch.setattr(
        Account,
        "calendar",
        lambda self, calendar_id: None if calendar_id == family else served(self, calendar_id),
    )
    sandbox_fault(connection, "new_events")
    run = sync(connection)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    assert run.deleted == 1 + len(expected(email, window_start, family))
    assert stored_ids(raw_db, connection) == expected(email, window_start) - expected(
        email, window_start, family
    )
    assert calendar_key(family) not in fresh(connection).cursors["events"]["calendars"]


def test_timed_events_keep_the_offset_of_where_they_happen(connection, window_start, raw_db):
    from zoneinfo import ZoneInfo

    run = sync(connection)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    documents = stored(raw_db, connection)
    records = [record_decode(doc, owner_id=connection.user_id)["data"] for doc in documents]
    timed = [r for r in records if not r["all_day"]]
    assert timed and all(r["utc_offset_min"] is None for r in records if r["all_day"])
    for record in timed:
        offset = record["start"].astimezone(ZoneInfo(record["time_zone"])).utcoffset()
        assert record["utc_offset_min"] == offset.total_seconds() // 60


def test_a_reconnect_keeps_the_sync_tokens_and_reads_only_what_changed(
    connection, window_start, raw_db
):
    """Disconnected (data kept), then connected again with a new grant: Google's sync tokens
    belong to the calendars, not to the grant, so the first sync after it is incremental."""
    from sources.sandbox.testing import google_credentials
    from sources.services import connection_disconnect, connection_upsert

    first = sync(connection)
    assert first.outcome == Outcome.SUCCESS, first.error_message
    cursors = fresh(connection).cursors
    connection_disconnect(connection=fresh(connection), delete_data=False)
    email = connection.sandbox_account
    credentials = google_credentials(connection.provider_class, email)
    again = connection_upsert(
        user=connection.user,
        provider=connection.provider_class,
        external_account_id=connection.external_account_id,
        credentials=credentials,
        account_label=email,
    )
    assert again.pk == connection.pk and fresh(again).cursors == cursors
    run = sync(again)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    assert run.api_calls == 4 and run.created == 0  # one incremental call per calendar
    assert stored_ids(raw_db, connection) == expected(email, window_start)


def test_everything_google_has_reaches_every_past_event(connection, raw_db):
    """The longest history window a person may choose: timeMin at the start of the epoch."""
    from sources.providers.base import BACKFILL_EVERYTHING, EVERYTHING_SINCE

    UserDataSource.objects.filter(pk=connection.pk).update(backfill_days=BACKFILL_EVERYTHING)
    run = sync(connection)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    everything = expected(connection.sandbox_account, EVERYTHING_SINCE)
    assert stored_ids(raw_db, connection) == everything
    recent = expected(connection.sandbox_account, timezone.now() - timedelta(days=BACKFILL_DAYS))
    assert len(everything) > len(recent)
