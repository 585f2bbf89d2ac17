"""Dispatch: claim due connections with a lease and enqueue one sync task each.

The query uses the (status, next_sync_at) index, so its cost follows the number due, not the
number connected. Each claim is one atomic conditional update: a connection is never synced twice
at once, whether two clusters dispatch or the schedule fires twice.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone
from django_q.tasks import async_task

from sibling.queue import broker
from sources.models import UserDataSource

Status = UserDataSource.Status
DISPATCH_SCHEDULE_NAME = "dispatch-due-syncs"


def _unleased(now: datetime) -> Q:
    return Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now)


def connection_claim(*, connection_id: object, now: datetime | None = None) -> str | None:
    """Take the lease on a due connection; the lease owner token, or None if not claimable."""
    now = now or timezone.now()
    owner = uuid.uuid4().hex
    claimed = (
        UserDataSource.objects.filter(pk=connection_id, status=Status.ACTIVE, next_sync_at__lte=now)
        .filter(_unleased(now))
        .update(
            lease_owner=owner,
            lease_expires_at=now + timedelta(seconds=settings.SIBLING_SYNC_LEASE_S),
        )
    )
    return owner if claimed else None


def dispatch_due_syncs(*, now: datetime | None = None, enqueue: bool = True) -> list[str]:
    """Claim what is due and enqueue its syncs; the ids claimed."""
    now = now or timezone.now()
    due = list(
        UserDataSource.objects.filter(status=Status.ACTIVE, next_sync_at__lte=now)
        .filter(_unleased(now))
        .order_by("next_sync_at")
        .values_list("pk", flat=True)[: settings.SIBLING_DISPATCH_BATCH]
    )
    claimed = []
    for connection_id in due:
        owner = connection_claim(connection_id=connection_id, now=now)
        if owner is None:
            continue
        claimed.append(str(connection_id))
        if enqueue:
            async_task(
                "ingestion.tasks.sync_connection",
                str(connection_id),
                owner,
                task_name=f"sync-{connection_id}",
                broker=broker(),
            )
    return claimed


def dispatch_schedule_ensure() -> None:
    from django_q.models import Schedule

    Schedule.objects.get_or_create(
        name=DISPATCH_SCHEDULE_NAME,
        defaults={
            "func": "ingestion.tasks.dispatch",
            "schedule_type": Schedule.MINUTES,
            "minutes": 1,
            "repeats": -1,
            "next_run": timezone.now(),
        },
    )
