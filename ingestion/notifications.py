"""What a provider's notification can ask of a connection: sync now, a window, a status."""

from __future__ import annotations

from datetime import date

from django.utils import timezone

from ingestion.models import SyncRun, WebhookEvent
from ingestion.runner import connection_sync
from ingestion.scheduler import connection_sync_enqueue
from sources.models import UserDataSource

Status = UserDataSource.Status


def event_concerns(event: WebhookEvent, connection: UserDataSource | None) -> bool:
    """Tie the event to its connection and person; False (and said why) when it has none."""
    if connection is None:
        # Answered 2xx already and revealing nothing to the sender; kept for staff.
        event.error = "no connection for this account"
        return False
    event.connection = connection
    event.user_id = connection.user_id
    return True


def connection_sync_request(connection: UserDataSource) -> bool:
    """An incremental sync as soon as possible (a provider says there is new data)."""
    if connection.status != Status.ACTIVE:
        return False
    UserDataSource.objects.filter(pk=connection.pk, status=Status.ACTIVE).update(
        next_sync_at=timezone.now()
    )
    # If a sync holds the lease now, the dispatch starts the next one when it is released.
    return connection_sync_enqueue(connection_id=connection.pk, trigger=SyncRun.Trigger.WEBHOOK)


def connection_window_fetch(
    connection: UserDataSource, *, stream: str, first: date, last: date
) -> SyncRun | None:
    """Fetch exactly the days a notification names, now, in this task."""
    if connection.status != Status.ACTIVE:
        return None
    return connection_sync(
        connection.pk, trigger=SyncRun.Trigger.WEBHOOK, window=(stream, first, last)
    )


def connection_reauth_required(connection: UserDataSource) -> None:
    UserDataSource.objects.filter(pk=connection.pk).exclude(status=Status.DISCONNECTED).update(
        status=Status.REAUTH_REQUIRED,
        last_error=connection.provider_class.reauth_message,
        next_sync_at=None,
    )


def connection_notice(connection: UserDataSource, text: str) -> None:
    UserDataSource.objects.filter(pk=connection.pk).update(notice=text[:300])
