"""Push channels (``events.watch``): one per calendar, opened at connect, renewed before they
end, stopped on disconnect.

A channel is ``{"calendar_id", "token", "resource_id", "expires_ms"}`` under its id in the
connection's credentials (``"channels"``), which are encrypted: the token is the secret every
notification must carry. Credentials change only under the connection's token-refresh lock
(the one ``ingestion.tokens`` takes), so a channel written here and a refreshed token written by
a sync never overwrite each other, and never onto a connection disconnected meanwhile.

Google does not renew channels: a new channel (new id, new token) replaces one before it ends,
and the old one is stopped (``channels.stop``). Its notifications are refused from then on.
"""

from __future__ import annotations

import logging
import secrets
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from bson import ObjectId
from django.conf import settings
from django.utils import timezone

from ingestion.errors import TransientError
from ingestion.http import CallCounter, RetryPolicy, connect_policy
from sibling import mongo
from sibling.encryption import value_encrypt
from sources.models import UserDataSource
from sources.providers.google_calendar.client import CalendarSyncClient, calendar_url
from sources.providers.google_calendar.provider import RENEW_EVERY_MINUTES, GoogleCalendar
from sources.providers.google_http import NotFound

logger = logging.getLogger(__name__)
Status = UserDataSource.Status
# A channel ending within this margin is replaced now: two renewal runs can be missed.
RENEW_MARGIN = timedelta(minutes=3 * RENEW_EVERY_MINUTES)
LOCK_S = 30
WAIT_FOR_LOCK_S = 20


def push_enabled() -> bool:
    return bool(settings.GOOGLE_CALENDAR_PUSH and settings.SIBLING_PUBLIC_URL)


def channel_address() -> str:
    """Where Google sends notifications: this app's receiver (https in production)."""
    return f"{settings.SIBLING_PUBLIC_URL.rstrip('/')}/webhooks/{GoogleCalendar.id}/"


def channel_ttl_s() -> int:
    return int(settings.GOOGLE_CALENDAR_CHANNEL_TTL_S)


# --- Credentials under the refresh lock -----------------------------------------------------------


def credentials_change(
    connection_id: Any, change: Callable[[dict[str, Any]], dict[str, Any]]
) -> dict[str, Any] | None:
    """Apply ``change`` to the connection's stored credentials, under its token-refresh lock.

    Returns the new credentials; None (and nothing written) when the connection is gone,
    disconnected or has no credentials.
    """
    table = mongo.plain_database()[UserDataSource._meta.db_table]
    deadline = time.monotonic() + WAIT_FOR_LOCK_S
    while True:
        now = timezone.now()
        claimed = table.update_one(
            {"_id": connection_id, "refresh_lock_until": {"$not": {"$gte": now}}},
            {"$set": {"refresh_lock_until": now + timedelta(seconds=LOCK_S)}},
        ).modified_count
        if claimed:
            break
        if time.monotonic() > deadline:
            raise TransientError("another process is still changing this connection's tokens")
        time.sleep(0.1)
    try:
        connection = UserDataSource.objects.filter(pk=connection_id).first()
        if (
            connection is None
            or connection.status == Status.DISCONNECTED
            or not connection.credentials
        ):
            return None
        changed = change(dict(connection.credentials))
        sealed = value_encrypt(changed, owner_id=connection.user_id)
        # A disconnect forgets the credentials without this lock: never write them back.
        written = (
            UserDataSource.objects.filter(pk=connection_id)
            .exclude(status=Status.DISCONNECTED)
            .update(credentials=sealed)
        )
        return changed if written else None
    finally:
        UserDataSource.objects.filter(pk=connection_id).update(refresh_lock_until=None)


def channels_stored(connection_id: Any) -> dict[str, dict[str, Any]]:
    connection = UserDataSource.objects.filter(pk=connection_id).first()
    channels = ((connection.credentials or {}) if connection else {}).get("channels")
    return dict(channels) if isinstance(channels, dict) else {}


def _channel_put(connection_id: Any, channel_id: str, channel: dict[str, Any] | None) -> None:
    def change(credentials: dict[str, Any]) -> dict[str, Any]:
        channels = dict(credentials.get("channels") or {})
        if channel is None:
            channels.pop(channel_id, None)
        else:
            channels[channel_id] = channel
        return {**credentials, "channels": channels}

    credentials_change(connection_id, change)


def _channels_forget(connection_id: Any, channel_ids: set[str]) -> None:
    def change(credentials: dict[str, Any]) -> dict[str, Any]:
        channels = credentials.get("channels") or {}
        kept = {cid: ch for cid, ch in channels.items() if cid not in channel_ids}
        return {**credentials, "channels": kept}

    credentials_change(connection_id, change)


# --- Open, stop, renew ----------------------------------------------------------------------------


def channel_open(client: CalendarSyncClient, calendar_id: str) -> str:
    """``events.watch`` on one calendar with a new channel id and secret token; the channel id."""
    connection = client.connection
    channel_id = f"{connection.pk}-{uuid.uuid4().hex}"
    expires_ms = int((time.time() + channel_ttl_s()) * 1000)
    channel = {
        "calendar_id": calendar_id,
        "token": secrets.token_urlsafe(32),
        "resource_id": "",
        "expires_ms": expires_ms,
    }
    # Stored before the call: Google's first message may arrive before its answer.
    _channel_put(connection.pk, channel_id, channel)
    try:
        answer = client.http.post_json(
            f"{calendar_url(calendar_id)}/events/watch",
            body={
                "id": channel_id,
                "type": "web_hook",
                "address": channel_address(),
                "token": channel["token"],
                "expiration": expires_ms,
            },
            operation="events.watch",
        )
    except Exception:
        _channel_put(connection.pk, channel_id, None)
        raise
    # The schema types expiration as an int64 string, the guide's example as a number.
    try:
        expires_ms = int(str(answer.get("expiration") or expires_ms))
    except ValueError:
        pass
    resource_id = answer.get("resourceId")
    channel = {
        **channel,
        "resource_id": resource_id if isinstance(resource_id, str) else "",
        "expires_ms": expires_ms,
    }
    _channel_put(connection.pk, channel_id, channel)
    return channel_id


def channel_stop(client: CalendarSyncClient, channel_id: str, channel: dict[str, Any]) -> None:
    """``channels.stop`` at Google (a channel Google no longer knows is gone already). The
    caller forgets the channel: renewal in one write for all it replaced, a disconnect with the
    credentials."""
    if channel.get("resource_id"):
        try:
            client.http.request(
                "POST",
                f"{GoogleCalendar.url('api')}/channels/stop",
                json={"id": channel_id, "resourceId": channel["resource_id"]},
                operation="channels.stop",
            )
        except NotFound:
            pass  # Google no longer knows it: stopped already, or ended


def _client(connection: UserDataSource, policy: RetryPolicy | None = None) -> CalendarSyncClient:
    return CalendarSyncClient(connection, counter=CallCounter(), policy=policy or RetryPolicy())


def channels_watch(connection: UserDataSource) -> int:
    """Give every calendar of the list a live channel; the number of channels opened.

    A calendar whose channels all end within RENEW_MARGIN gets a new one, then the old ones
    are stopped; channels of calendars that left the list are stopped.
    """
    client = _client(connection)
    try:
        calendars = client.calendar_ids()
        soon_ms = (time.time() + RENEW_MARGIN.total_seconds()) * 1000
        by_calendar: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for channel_id, channel in channels_stored(connection.pk).items():
            by_calendar.setdefault(str(channel.get("calendar_id")), []).append(
                (channel_id, channel)
            )
        opened = 0
        replaced: list[tuple[str, dict[str, Any]]] = []
        for calendar_id in calendars:
            current = by_calendar.pop(calendar_id, [])
            if any(int(ch.get("expires_ms") or 0) > soon_ms for _, ch in current):
                continue
            replaced += current
            try:
                channel_open(client, calendar_id)
            except NotFound:
                continue  # listed, yet not served (as the sync finds it): nothing to watch
            opened += 1
        for leftover in by_calendar.values():
            replaced += leftover
        for channel_id, channel in replaced:
            _stop_quietly(client, channel_id, channel)
        if replaced:
            _channels_forget(connection.pk, {channel_id for channel_id, _ in replaced})
        return opened
    finally:
        client.close()


def _stop_quietly(client: CalendarSyncClient, channel_id: str, channel: dict[str, Any]) -> None:
    try:
        channel_stop(client, channel_id, channel)
    except Exception as err:  # it ends by itself at its expiry; its messages are refused
        logger.warning(
            "%s channel of connection %s not stopped: %s",
            GoogleCalendar.id,
            client.connection.pk,
            type(err).__name__,
        )


def channels_stop_all(connection: UserDataSource) -> int:
    """Stop every channel of the connection at Google (on disconnect, which then forgets the
    credentials and the channels with them: nothing is written here, so a token refresh
    holding the connection's lock delays nothing); the number of channels."""
    channels = channels_stored(connection.pk)
    if not channels:
        return 0
    client = _client(connection, connect_policy())  # a person waits: no long waits
    try:
        for channel_id, channel in channels.items():
            _stop_quietly(client, channel_id, channel)
    finally:
        client.close()
    return len(channels)


# --- Tasks ----------------------------------------------------------------------------------------


def channels_renew_all() -> int:
    """The periodic renewal: every active connection's channels; the number opened."""
    if not push_enabled():
        return 0
    opened = 0
    for connection in UserDataSource.objects.filter(
        provider=GoogleCalendar.id, status=Status.ACTIVE
    ).iterator():
        try:
            opened += channels_watch(connection)
        except Exception as err:  # one account's failure must not stop the others
            logger.warning(
                "%s channel renewal failed for %s: %s",
                GoogleCalendar.id,
                connection.pk,
                type(err).__name__,
            )
    return opened


def channels_watch_one(connection_id: str) -> int:
    """Open the channels of one connection (just connected)."""
    connection = UserDataSource.objects.filter(pk=ObjectId(connection_id)).first()
    if connection is None or connection.status != Status.ACTIVE or not push_enabled():
        return 0
    return channels_watch(connection)
