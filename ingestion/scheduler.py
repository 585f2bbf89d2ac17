"""Dispatch: claim due connections with a lease and enqueue one sync task each.

The query uses the (status, next_sync_at) index, so its cost follows the number due, not the
number connected. Each claim is one atomic conditional update: a connection is never synced twice
at once, whether two clusters dispatch or the schedule fires twice.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone
from django_q.tasks import async_task
from pymongo.collection import Collection

from sibling import mongo
from sibling.queue import broker, schedule_ensure
from sources.models import UserDataSource

Status = UserDataSource.Status
DISPATCH_SCHEDULE_NAME = "dispatch-due-syncs"


def _connections() -> Collection:
    return mongo.plain_database()[UserDataSource._meta.db_table]


def _unleased(now: datetime) -> dict:
    # "No lease, or an expired one" without $or: on the embedded server a top-level $or (and the
    # ORM's nested $and forms) turned each indexed claim into a collection scan, 60 ms apiece at
    # 10,000 connections; $not/$gte matches null, missing and past values alike and stays
    # indexed. Measured by `make bench` (dispatch_10k_ms).
    return {"lease_expires_at": {"$not": {"$gte": now}}}


def connection_claim(*, connection_id: object, now: datetime | None = None) -> str | None:
    """Take the lease on a due connection; the lease owner token, or None if not claimable."""
    now = now or timezone.now()
    owner = uuid.uuid4().hex
    claimed = _connections().update_one(
        {
            "_id": connection_id,
            "status": Status.ACTIVE,
            "next_sync_at": {"$lte": now},
            **_unleased(now),
        },
        {
            "$set": {
                "lease_owner": owner,
                "lease_expires_at": now + timedelta(seconds=settings.SIBLING_SYNC_LEASE_S),
            }
        },
    )
    return owner if claimed.modified_count else None


def dispatch_due_syncs(*, now: datetime | None = None, enqueue: bool = True) -> list[str]:
    """Claim what is due and enqueue its syncs; the ids claimed."""
    now = now or timezone.now()
    due = _connections().find(
        {"status": Status.ACTIVE, "next_sync_at": {"$lte": now}, **_unleased(now)},
        projection={"_id": 1},
        sort=[("next_sync_at", 1)],
        limit=settings.SIBLING_DISPATCH_BATCH,
    )
    claimed = []
    for document in list(due):
        connection_id = document["_id"]
        owner = connection_claim(connection_id=connection_id, now=now)
        if owner is None:
            continue
        claimed.append(str(connection_id))
        if enqueue:
            _enqueue(connection_id, owner, "schedule")
    return claimed


def connection_sync_enqueue(*, connection_id: object, trigger: str) -> bool:
    """Start a due connection's sync now rather than at the next dispatch."""
    owner = connection_claim(connection_id=connection_id)
    if owner is None:
        return False  # already syncing, or not due
    _enqueue(connection_id, owner, trigger)
    return True


def _enqueue(connection_id: object, owner: str, trigger: str) -> None:
    async_task(
        "ingestion.tasks.sync_connection",
        str(connection_id),
        owner,
        trigger,
        task_name=f"sync-{connection_id}",
        broker=broker(),
    )


def dispatch_schedule_ensure() -> None:
    schedule_ensure(name=DISPATCH_SCHEDULE_NAME, func="ingestion.tasks.dispatch")
