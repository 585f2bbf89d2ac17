"""Google Calendar push: channels opened per calendar (their tokens encrypted), notifications
from the sandbox over HTTP that start a sync, an attacker's forgeries refused and counted (never
a 500), channels renewed before they end and stopped on disconnect."""

from __future__ import annotations

import time
import uuid

import bson
import pytest
import requests
from bson import ObjectId

from ingestion.models import SyncRun, WebhookEvent, WebhookRejection
from sources.models import UserDataSource
from sources.providers.google_calendar import tasks
from sources.providers.google_calendar.provider import GoogleCalendar
from sources.providers.google_calendar.sandbox import channels_live, notify_channel
from sources.providers.google_calendar.webhooks import REFUSED
from sources.sandbox.testing import google_credentials
from sources.services import connection_disconnect, connection_upsert
from tests.sources.providers.kit import sandbox_connection, stored_raw

pytestmark = pytest.mark.django_db(transaction=True)
Status = UserDataSource.Status


@pytest.fixture
def push(sandbox, settings):
    """Google (the sandbox) reaches this test's live server."""
    settings.SIBLING_PUBLIC_URL = sandbox.url
    settings.SIBLING_SANDBOX_SEND_WEBHOOKS = True
    return sandbox


@pytest.fixture
def watched(push, connection) -> UserDataSource:
    assert tasks.channels_watch(connection) == 3
    return connection


def fresh(connection: UserDataSource) -> UserDataSource:
    return UserDataSource.objects.get(pk=connection.pk)


def channels(connection: UserDataSource) -> dict:
    return fresh(connection).credentials["channels"]


def receiver(push) -> str:
    return f"{push.url}/webhooks/google_calendar/"


def notification(channel_id: str, channel: dict, **overrides: str) -> dict[str, str]:
    headers = {
        "X-Goog-Channel-ID": channel_id,
        "X-Goog-Channel-Token": channel["token"],
        "X-Goog-Resource-ID": channel["resource_id"],
        "X-Goog-Resource-State": "exists",
        "X-Goog-Message-Number": "7",
        "X-Goog-Resource-URI": "https://www.googleapis.com/calendar/v3/calendars/x/events",
    }
    headers.update(overrides)
    return {name: value for name, value in headers.items() if value is not None}


def test_each_calendar_gets_a_channel_whose_token_is_stored_encrypted(watched, raw_db):
    email = watched.sandbox_account
    stored = channels(watched)
    assert len(stored) == 3
    assert {c["calendar_id"] for c in stored.values()} == {
        c["calendar_id"] for c in (r.data for r in channels_live(email))
    }
    assert set(stored) == {r.key for r in channels_live(email)}
    for channel_id, channel in stored.items():
        assert channel_id.startswith(f"{watched.pk}-") and len(channel_id) <= 64
        assert len(channel["token"]) >= 40 and channel["resource_id"]
        assert channel["expires_ms"] > time.time() * 1000 + 6 * 86400 * 1000
    raw = bson.encode(stored_raw(raw_db, watched))
    for channel in stored.values():
        assert channel["token"].encode() not in raw
    # The handshake each channel sent as it opened was accepted: nothing stored, nothing refused.
    assert not WebhookEvent.objects.filter(provider="google_calendar").exists()
    assert not WebhookRejection.objects.filter(provider="google_calendar").exists()
    for channel_id in stored:
        assert notify_channel(channel_id, "sync") == [200]
    assert GoogleCalendar.credentials_redacted(fresh(watched).credentials)["channels"] == "[secret]"


def test_a_providers_notification_starts_a_sync_that_reads_the_change(watched, push, raw_db):
    email = watched.sandbox_account
    answer = requests.post(
        f"{push.url}/sandbox/_webhooks",
        json={"provider": "google_calendar", "action": "notify", "email": email},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["statuses"] == [200, 200, 200]  # one per calendar's channel
    events = WebhookEvent.objects.filter(provider="google_calendar")
    assert events.count() == 3
    assert {e.event_type for e in events} == {"exists"}
    assert all(e.status == WebhookEvent.Status.PROCESSED for e in events)
    assert all(e.user_id == watched.user_id and e.connection_id == watched.pk for e in events)
    # The first notification's sync stored the events (the others found it done or running).
    runs = SyncRun.objects.filter(connection=watched, trigger=SyncRun.Trigger.WEBHOOK)
    assert runs.exists() and runs.first().outcome == SyncRun.Outcome.SUCCESS
    assert raw_db["external_data"].count_documents({"connection": watched.pk}) > 20


def test_new_events_at_the_provider_are_pushed_and_synced(watched, push, raw_db):
    from tests.sources.providers.kit import sandbox_fault

    assert SyncRun.objects.filter(connection=watched).count() == 0
    sandbox_fault(watched, "new_events")
    # Only the primary calendar changed: one notification, one sync.
    (event,) = WebhookEvent.objects.filter(provider="google_calendar")
    assert event.status == WebhookEvent.Status.PROCESSED
    (run,) = SyncRun.objects.filter(connection=watched)
    assert run.trigger == SyncRun.Trigger.WEBHOOK and run.outcome == SyncRun.Outcome.SUCCESS


def test_a_redelivered_notification_is_one_event(watched, push):
    channel_id = next(iter(channels(watched)))
    assert notify_channel(channel_id, "exists", duplicate=True) == [200, 200]
    (event,) = WebhookEvent.objects.filter(provider="google_calendar")
    assert event.deliveries == 2


def test_an_attacker_is_refused_and_counted_never_a_500(watched, push):
    channel_id, channel = next(iter(channels(watched).items()))
    url = receiver(push)
    forged = [
        notification(channel_id, channel, **{"X-Goog-Channel-Token": "guessed"}),
        notification(channel_id, channel, **{"X-Goog-Channel-Token": None}),
        notification(f"{ObjectId()}-{uuid.uuid4().hex}", channel),
        notification("not-a-channel", channel),
        notification("x" * 5000, channel),
        notification(channel_id, channel, **{"X-Goog-Channel-Token": channel["token"] + "x"}),
        notification(channel_id, channel, **{"X-Goog-Resource-ID": "another-resource"}),
        {},
    ]
    for headers in forged:
        answer = requests.post(url, headers=headers, timeout=30)
        assert answer.status_code == 401, (headers, answer.status_code)
        assert answer.json() == {"error": REFUSED}
        assert channel["token"] not in answer.text
    rejected = WebhookRejection.objects.filter(provider="google_calendar", reason=REFUSED)
    assert sum(r.count for r in rejected) == len(forged)
    # Verified, but not a notification Google sends: a clear 400.
    for headers in (
        notification(channel_id, channel, **{"X-Goog-Resource-State": "deleted"}),
        notification(channel_id, channel, **{"X-Goog-Message-Number": None}),
        notification(channel_id, channel, **{"X-Goog-Message-Number": "-1"}),
        # A digit to str.isdigit(), not to int(): latin-1 "²".
        notification(channel_id, channel, **{"X-Goog-Message-Number": "\xb2"}),
    ):
        assert requests.post(url, headers=headers, timeout=30).status_code == 400
    assert requests.get(url, timeout=30).status_code == 405
    assert not WebhookEvent.objects.filter(provider="google_calendar").exists()
    # The genuine sender still gets through.
    good = requests.post(url, headers=notification(channel_id, channel), data=b"", timeout=30)
    assert good.status_code == 200


def test_a_listed_calendar_that_cannot_be_watched_leaves_the_others_watched(
    push, connection, monkeypatch
):
    from sources.providers.google_calendar.sandbox import Account

    family = Account(connection.sandbox_account).calendars()[1]["id"]
    served = Account.calendar

    def not_family(self, calendar_id):
        return None if calendar_id == family else served(self, calendar_id)

    monkeypatch.setattr(Account, "calendar", not_family)
    assert tasks.channels_watch(connection) == 2
    assert family not in {c["calendar_id"] for c in channels(connection).values()}
    assert len(channels_live(connection.sandbox_account)) == 2


def test_a_channel_ending_soon_is_replaced_and_the_old_one_stopped(watched, push):
    email = watched.sandbox_account
    assert tasks.channels_watch(watched) == 0  # all live: nothing to do
    old_id, old = next(iter(channels(watched).items()))

    def ending(credentials: dict) -> dict:
        changed = dict(credentials["channels"])
        changed[old_id] = {**changed[old_id], "expires_ms": int(time.time() * 1000) + 60_000}
        return {**credentials, "channels": changed}

    tasks.credentials_change(watched.pk, ending)
    assert tasks.channels_renew_all() == 1
    now = channels(watched)
    assert old_id not in now and len(now) == 3
    (new_id,) = [cid for cid, c in now.items() if c["calendar_id"] == old["calendar_id"]]
    assert now[new_id]["token"] != old["token"]
    assert old_id not in {r.key for r in channels_live(email)}  # stopped at Google
    assert notify_channel(new_id, "exists") == [200]
    # The old channel's messages are refused from now on.
    late = requests.post(receiver(push), headers=notification(old_id, old), timeout=30)
    assert late.status_code == 401


def test_renewal_skips_connections_not_active_and_push_switched_off(watched, push, settings):
    UserDataSource.objects.filter(pk=watched.pk).update(status=Status.PAUSED)
    assert tasks.channels_renew_all() == 0
    UserDataSource.objects.filter(pk=watched.pk).update(status=Status.ACTIVE)
    settings.GOOGLE_CALENDAR_PUSH = False
    assert tasks.channels_renew_all() == 0


def test_a_reconnect_keeps_the_live_channels(watched, push, settings):
    settings.SIBLING_SYNC_ON_DUE = True  # a connect watches the calendars at once
    email = watched.sandbox_account
    before = channels(watched)
    credentials = google_credentials(GoogleCalendar, email)
    connection_upsert(
        user=watched.user,
        provider=GoogleCalendar,
        external_account_id=watched.external_account_id,
        credentials=credentials,
        account_label=email,
    )
    after = fresh(watched).credentials
    assert after["access_token"] == credentials["access_token"]
    assert after["channels"] == before
    assert len(channels_live(email)) == 3  # none opened beside them, none left behind
    channel_id, channel = next(iter(before.items()))
    answer = requests.post(receiver(push), headers=notification(channel_id, channel), timeout=30)
    assert answer.status_code == 200


def test_disconnecting_stops_every_channel(watched, push):
    email = watched.sandbox_account
    old_id, old = next(iter(channels(watched).items()))
    result = connection_disconnect(connection=fresh(watched), delete_data=False)
    assert result.revoked
    assert channels_live(email) == []
    assert fresh(watched).credentials is None
    late = requests.post(receiver(push), headers=notification(old_id, old), timeout=30)
    assert late.status_code == 401


def test_a_disconnect_during_a_token_refresh_stops_every_channel(watched, push, monkeypatch):
    """Stopping channels writes nothing, so the refresh lock another process holds is no
    obstacle (forgetting them one by one used to wait for it, then give up after the first)."""
    from datetime import timedelta

    from django.utils import timezone

    monkeypatch.setattr(tasks, "WAIT_FOR_LOCK_S", 0.5)
    UserDataSource.objects.filter(pk=watched.pk).update(
        refresh_lock_until=timezone.now() + timedelta(seconds=tasks.LOCK_S)
    )
    result = connection_disconnect(connection=fresh(watched), delete_data=False)
    assert result.revoked
    assert channels_live(watched.sandbox_account) == []


def test_a_disconnect_goes_on_when_the_channels_cannot_be_stopped(watched, push):
    from tests.sources.providers.kit import sandbox_fault

    sandbox_fault(watched, "rate_limit", count=3)  # every channels.stop is refused
    result = connection_disconnect(connection=fresh(watched), delete_data=True)
    assert not UserDataSource.objects.filter(pk=watched.pk).exists()
    assert result.data_deleted


def test_a_new_connection_is_watched_at_once(push, person, settings):
    settings.SIBLING_SYNC_ON_DUE = True
    connection = sandbox_connection(person, GoogleCalendar)
    assert len(channels(connection)) == 3
    assert len(channels_live(connection.sandbox_account)) == 3
