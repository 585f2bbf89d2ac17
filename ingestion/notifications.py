"""What a provider's notification can ask of a connection: sync now, a window, a status."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import date, timedelta

from django.conf import settings
from django.utils import timezone

from ingestion.models import SyncRun, WebhookEvent
from ingestion.scheduler import connection_sync_enqueue, window_queue, windows_fetch_enqueue
from sources.models import UserDataSource
from sources.providers.base import BACKFILL_EVERYTHING
from sources.signals import REAUTH_REQUIRED, connection_changed_send

logger = logging.getLogger(__name__)
Status = UserDataSource.Status
# What one type of event asks of its connection.
EventHandler = Callable[[WebhookEvent, UserDataSource], None]


def event_concerns(event: WebhookEvent, connection: UserDataSource | None) -> bool:
    """Tie the event to its connection and person; False (and said why) when it has none."""
    if connection is None:
        # Answered 2xx already and revealing nothing to the sender; kept for staff.
        event.error = "no connection for this account"
        return False
    event.connection = connection
    event.user_id = connection.user_id
    return True


def event_dispatch(
    event: WebhookEvent,
    connection: UserDataSource | None,
    handlers: Mapping[str, EventHandler],
) -> None:
    """Hand a stored event to the function its type maps to in a provider's table (event type
    to handler), once it is tied to its connection. A type the table lacks is kept, said."""
    if not event_concerns(event, connection):
        return
    handler = handlers.get(event.event_type)
    if handler is None:
        event.error = f"unhandled event type {event.event_type}"
        return
    handler(event, connection)


def connection_sync_request(connection: UserDataSource) -> bool:
    """An incremental sync as soon as possible (a provider says there is new data)."""
    if connection.status != Status.ACTIVE:
        return False
    UserDataSource.objects.filter(pk=connection.pk, status=Status.ACTIVE).update(
        next_sync_at=timezone.now()
    )
    # If a sync holds the lease now, the connection stays due and its release starts the next.
    return connection_sync_enqueue(connection_id=connection.pk, trigger=SyncRun.Trigger.WEBHOOK)


def window_bounds(
    first: date, last: date, *, history_days: int | None = None
) -> tuple[date, date] | None:
    """The days of a requested window that may be fetched: at most the history window back (a
    connection's ``backfill_days_in_force``; SIBLING_BACKFILL_DAYS when None; no bound for
    BACKFILL_EVERYTHING), never in the future (today plus one day, as a person's civil "today"
    can be a day ahead of UTC). None when nothing of it is left."""
    today = timezone.now().date()
    days = settings.SIBLING_BACKFILL_DAYS if history_days is None else history_days
    earliest = date.min if days == BACKFILL_EVERYTHING else today - timedelta(days=days)
    latest = today + timedelta(days=1)
    if last < first:
        first, last = last, first
    bounded = (max(first, earliest), min(last, latest))
    return bounded if bounded[0] <= bounded[1] else None


def connection_window_fetch(
    connection: UserDataSource, *, stream: str, first: date, last: date
) -> bool:
    """Fetch exactly the days a notification names, in a task of its own.

    The days are queued on the connection first (merged with what waits for the same stream),
    then a task fetches them under the connection's lease. If another sync holds the lease, they
    stay queued and its release starts the fetch: never beside it, never dropped. A window beyond
    the bounds (``window_bounds``) is clamped and logged. False when nothing was queued.
    """
    if stream not in {s.name for s in connection.provider_class.streams}:
        raise ValueError(f"{connection.provider} has no stream {stream!r}")
    if connection.status != Status.ACTIVE:
        return False
    # The person's history window bounds what a notification fetches, as it bounded the first
    # sync: neither further back than they chose, nor cut short of it.
    bounded = window_bounds(first, last, history_days=connection.backfill_days_in_force)
    if bounded != (min(first, last), max(first, last)):
        # Counts only: dates of a person's activity stay out of the logs.
        asked = abs((last - first).days) + 1
        kept = (bounded[1] - bounded[0]).days + 1 if bounded else 0
        logger.warning(
            "%s window for connection %s clamped: %d days asked, %d kept",
            stream,
            connection.pk,
            asked,
            kept,
        )
    if bounded is None:
        return False
    window_queue(connection_id=connection.pk, stream=stream, first=bounded[0], last=bounded[1])
    windows_fetch_enqueue(connection_id=connection.pk)
    return True


def connection_reauth_required(connection: UserDataSource) -> None:
    changed = (
        UserDataSource.objects.filter(pk=connection.pk)
        .exclude(status__in=[Status.DISCONNECTED, Status.REAUTH_REQUIRED])
        .update(
            status=Status.REAUTH_REQUIRED,
            last_error=connection.provider_class.reauth_message,
            next_sync_at=None,
        )
    )
    if changed:
        connection.status = Status.REAUTH_REQUIRED
        connection_changed_send(connection, REAUTH_REQUIRED)


def connection_notice(connection: UserDataSource, text: str, *, change: str = "") -> None:
    """Show the person something to act on soon. With ``change`` (``sources.signals.EXPIRING``,
    say), the notice is also an incident that connection_changed's receivers hear of, once per
    new text."""
    text = text[:300]
    rows = UserDataSource.objects.filter(pk=connection.pk).exclude(notice=text)
    changed = rows.update(notice=text)
    connection.notice = text
    if change and changed:
        connection_changed_send(connection, change)


def connection_for_account(
    *, provider: str, external_account_id: str | None = None, external_lookup: str | None = None
) -> UserDataSource | None:
    """The connection a provider's notification names by its account (the provider's account
    or item id as ``external_account_id``, or a mailbox address's ``external_lookup``), never a
    disconnected one: a reconnected account's events go to its
    current connection only, and an account nobody has connected any more concerns no one.

    The query is exactly an index's fields ((provider, external_account_id), or
    external_lookup): the embedded server's planner scans the collection as soon as a filter
    names a field outside the index (a status, even as a flat ``$in``), so the few rows of one
    account are checked here instead.
    """
    if external_account_id is not None:
        rows = UserDataSource.objects.filter(
            provider=provider, external_account_id=external_account_id
        )
    elif external_lookup:
        rows = UserDataSource.objects.filter(external_lookup=external_lookup)
    else:
        return None
    linked = [row for row in rows if row.provider == provider and row.status != Status.DISCONNECTED]
    # The newest (ObjectIds grow with time) if one account is linked twice.
    return max(linked, key=lambda row: row.pk, default=None)
