"""Strava syncs against its sandbox over HTTP: a backfill and an incremental sync by ``after``,
refresh tokens that rotate, and the application's rate limits, which defer a sync before Strava
answers 429 (and after one)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import bson
import pytest
import requests
from django.utils import timezone

from ingestion.models import QuarantinedItem, SyncRun
from sibling.encryption import value_decrypt
from sources.models import UserDataSource
from sources.providers.strava.client import next_day, next_quarter
from sources.providers.strava.provider import Strava
from sources.providers.strava.sandbox import NS, activities_of, activity_add
from sources.sandbox.faults import fault_set
from sources.sandbox.models import SandboxRecord
from tests.ingestion.conftest import ENVELOPE, fresh, stored, sync
from tests.sources.providers.strava.conftest import strava_connect

pytestmark = pytest.mark.django_db(transaction=True)
Status = UserDataSource.Status
Outcome = SyncRun.Outcome


def sandbox_ids(connection: UserDataSource, since: datetime) -> set[str]:
    """Every activity the sandbox holds for the athlete since ``since``."""
    found = activities_of(connection.sandbox_account, after=int(since.timestamp()), before=None)
    return {str(a["id"]) for a in found}


def sandbox_usage(connection: UserDataSource) -> dict:
    """What the sandbox counted of the application's calls today (per bucket and window)."""
    client_id = Strava.client_credentials()["client_id"]
    key = f"{client_id}:{timezone.now().astimezone(UTC).date().isoformat()}"
    record = SandboxRecord.objects.filter(provider=NS, kind="usage", key=key).first()
    return record.data if record else {}


def test_backfill_in_pages_then_an_incremental_sync_by_after(connection, settings, raw_db):
    settings.STRAVA_PAGE_SIZE = 3
    run = sync(connection)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    assert run.trigger == SyncRun.Trigger.BACKFILL
    records = stored(connection, "behavioral_data")
    since = run.started_at - timedelta(days=settings.SIBLING_BACKFILL_DAYS)
    expected = sandbox_ids(connection, since)
    assert expected and {r["external_id"] for r in records} == expected
    # Pages of three, then the empty page that ends the list.
    assert run.pages == -(-len(expected) // 3) and run.api_calls == run.pages + 1
    assert fresh(connection).records_stored == len(expected)
    cursor = fresh(connection).cursors["activities"]
    starts = [r["occurred_at"].replace(tzinfo=UTC) for r in records]
    assert cursor == int(max(starts).timestamp())

    # Sealed in the raw documents: only the envelope is readable.
    raw = raw_db["behavioral_data"].find_one({"_id": records[0]["_id"]})
    assert set(raw) == ENVELOPE | {"_id"}
    assert raw["sealed"].subtype == 6 and "data" not in raw
    data = value_decrypt(raw["sealed"], owner_id=connection.user_id)
    assert data["sport_type"] and data["start_time"]
    assert data["name"].encode() not in bson.encode(raw)

    # An activity uploaded since: the next sync reads from the cursor (less the refetch
    # window), not from the backfill's start.
    added = activity_add(connection.sandbox_account)
    again = sync(connection)
    assert again.outcome == Outcome.SUCCESS and again.trigger == SyncRun.Trigger.SCHEDULE
    assert again.created == 1
    assert str(added["id"]) in {r["external_id"] for r in stored(connection, "behavioral_data")}
    recent = sandbox_ids(connection, datetime.fromtimestamp(cursor, UTC) - timedelta(hours=72))
    assert again.api_calls == -(-len(recent) // 3) + 1 < run.api_calls
    # The cursor is the latest start stored: the added activity's, or a seeded one's that
    # started later still (seeded activities run up to the present).
    starts = [r["occurred_at"].replace(tzinfo=UTC) for r in stored(connection, "behavioral_data")]
    moved = fresh(connection).cursors["activities"]
    assert moved == int(max(starts).timestamp())
    added_start = datetime.fromisoformat(added["start_date"].replace("Z", "+00:00"))
    assert moved >= int(added_start.timestamp()) and moved >= cursor


def test_a_rotated_refresh_token_is_saved_before_the_new_access_token_is_used(
    connection, monkeypatch
):
    before = fresh(connection).credentials
    fault_set("strava", connection.sandbox_account, "expire_access_token")
    stale = fresh(connection)
    stale.credentials = {**before, "expires_at": 1}
    stale.save(update_fields=["credentials"])

    seen = []
    original = requests.Session.request

    def watching(session, method, url, *args, **kwargs):
        if "/athlete/activities" in url:
            stored_now = fresh(connection).credentials
            bearer = (kwargs.get("headers") or {}).get("Authorization", "")
            seen.append((stored_now, bearer))
        return original(session, method, url, *args, **kwargs)

    monkeypatch.setattr(requests.Session, "request", watching)
    run = sync(connection)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    stored_at_first_call, bearer = seen[0]
    # When the new access token was first used, the rotated refresh token was already stored.
    assert stored_at_first_call["refresh_token"] != before["refresh_token"]
    assert bearer == f"Bearer {stored_at_first_call['access_token']}"
    assert stored_at_first_call["access_token"] != before["access_token"]
    # And the one used stopped working at once, as Strava documents.
    client = Strava.client_credentials()
    refused = requests.post(
        Strava.url("token"),
        data={**client, "grant_type": "refresh_token", "refresh_token": before["refresh_token"]},
        timeout=30,
    )
    assert refused.status_code == 400
    assert fresh(connection).credentials["refresh_token"] == stored_at_first_call["refresh_token"]


def test_usage_near_the_limit_defers_every_sync_before_a_429(
    mid_quarter, connection, person, settings
):
    settings.STRAVA_PAGE_SIZE = 1
    settings.STRAVA_SANDBOX_READ_RATE_LIMIT = "3,1000"
    run = sync(connection)
    assert run.outcome == Outcome.DEFERRED, run.error_message
    assert "read_15min budget" in run.error_message
    # Three calls, each page stored with its cursor; the fourth was never made: no 429.
    assert run.api_calls == 3 and run.rate_limited == 0 and run.pages == 3
    usage = sandbox_usage(connection)
    assert usage["read"]["day"] == 3
    connection = fresh(connection)
    assert connection.cursors["activities"] and connection.status == Status.ACTIVE
    until = connection.next_sync_at
    assert until == next_quarter(run.started_at) or until == next_quarter(run.ended_at)
    assert until.minute % 15 == 0 and until.second == 0 and until > run.started_at

    # The budget is the application's: another athlete's sync waits too, without a call.
    other = strava_connect(person)
    deferred = sync(other)
    assert deferred.outcome == Outcome.DEFERRED and deferred.api_calls == 0
    assert sandbox_usage(connection)["read"]["day"] == 3


def test_a_429_defers_the_sync_to_the_next_window(mid_quarter, connection, settings):
    settings.STRAVA_SANDBOX_READ_RATE_LIMIT = "2,1000"
    # Calls this process never saw (another host's) spend the window first.
    token = fresh(connection).credentials["access_token"]
    for _ in range(2):
        requests.get(
            f"{Strava.url('api')}/athlete",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
    run = sync(connection)
    assert run.outcome == Outcome.DEFERRED, run.error_message
    assert run.api_calls == 1 and run.rate_limited == 1
    until = fresh(connection).next_sync_at
    assert until in (next_quarter(run.started_at), next_quarter(run.ended_at))


def test_a_spent_daily_limit_defers_to_the_next_utc_day(mid_quarter, connection, settings):
    settings.STRAVA_PAGE_SIZE = 1
    settings.STRAVA_SANDBOX_READ_RATE_LIMIT = "1000,2"
    run = sync(connection)
    assert run.outcome == Outcome.DEFERRED and "read_daily budget" in run.error_message
    assert run.api_calls == 2 and run.rate_limited == 0
    until = fresh(connection).next_sync_at
    assert until in (next_day(run.started_at), next_day(run.ended_at))
    assert (until.hour, until.minute, until.second) == (0, 0, 0)


def test_broken_items_are_quarantined_and_the_rest_stored(connection):
    fault_set("strava", connection.sandbox_account, "malformed")
    run = sync(connection)
    assert run.outcome == Outcome.PARTIAL and run.quarantined == 2
    reasons = set(QuarantinedItem.objects.values_list("reason", flat=True))
    assert reasons == {"workout: id is not a positive integer", "workout: missing sport_type"}
    assert stored(connection, "behavioral_data")


def test_a_deauthorized_athlete_is_asked_to_connect_again(connection):
    fault_set("strava", connection.sandbox_account, "revoke")
    run = sync(connection)
    assert run.outcome == Outcome.FAILED
    connection = fresh(connection)
    assert connection.status == Status.REAUTH_REQUIRED
    assert connection.last_error == Strava.reauth_message


def test_a_server_error_is_retried_in_place(connection):
    fault_set("strava", connection.sandbox_account, "server_error")
    run = sync(connection)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    assert stored(connection, "behavioral_data")
    assert fresh(connection).next_sync_at > timezone.now()


def test_workouts_keep_where_they_took_place_as_an_offset(connection):
    run = sync(connection)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    stored_workouts = stored(connection)
    assert stored_workouts
    since = int((timezone.now() - timedelta(days=30)).timestamp())
    served = {
        str(a["id"]): a for a in activities_of(connection.sandbox_account, after=since, before=None)
    }
    for document in stored_workouts:
        data = value_decrypt(document["sealed"], owner_id=connection.user_id)
        activity = served[document["external_id"]]
        assert data["utc_offset_min"] * 60 == activity["utc_offset"]


def test_everything_strava_has_lists_every_activity(connection, settings):
    """The longest history window a person may choose: no ``after`` bound before the epoch."""
    from sources.providers.base import BACKFILL_EVERYTHING, EVERYTHING_SINCE

    UserDataSource.objects.filter(pk=connection.pk).update(backfill_days=BACKFILL_EVERYTHING)
    run = sync(connection)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    everything = sandbox_ids(connection, EVERYTHING_SINCE)
    window = timedelta(days=settings.SIBLING_BACKFILL_DAYS)
    recent = sandbox_ids(connection, run.started_at - window)
    assert {r["external_id"] for r in stored(connection, "behavioral_data")} == everything
    assert len(everything) > len(recent)
