"""Dispatch, and the lease that lets one sync of a connection run at a time.

The query uses the (status, next_sync_at) index, so its cost follows the number due, not the
number connected. Each claim is one atomic conditional update: a connection is never synced twice
at once, whether two clusters dispatch or the schedule fires twice.

Every path that syncs (the dispatch, a sync a provider or a person asks for, a notification's
window fetch, the ``sync`` command, the benchmark) takes the lease through ``connection_claim``;
the runner refuses to run without it, renews it while pages are stored and releases it only while
it still owns it. Lease operations and the window queue are single-document updates keyed by
``_id`` with flat filters, so they stay indexed on the embedded server too.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from typing import NamedTuple

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


def _lease_until(now: datetime) -> datetime:
    return now + timedelta(seconds=settings.SIBLING_SYNC_LEASE_S)


def connection_claim(
    *, connection_id: object, now: datetime | None = None, due: bool = True
) -> str | None:
    """Take the lease on an active connection; the lease owner token, or None if not claimable.

    ``due`` (the dispatch, a requested sync) also requires ``next_sync_at`` to have come;
    ``due=False`` is for syncs asked for regardless of the schedule (a window fetch, the
    command). Either way only one holder at a time: a lease is taken only when there is none or
    the last one expired (its worker was killed).
    """
    now = now or timezone.now()
    owner = uuid.uuid4().hex
    condition: dict = {"_id": connection_id, "status": Status.ACTIVE}
    if due:
        condition["next_sync_at"] = {"$lte": now}
    claimed = _connections().update_one(
        {**condition, **_unleased(now)},
        {"$set": {"lease_owner": owner, "lease_expires_at": _lease_until(now)}},
    )
    return owner if claimed.modified_count else None


def connection_lease_renew(*, connection_id: object, owner: str) -> bool:
    """Extend a lease this owner still holds; False when it has lost it to someone else."""
    renewed = _connections().update_one(
        {"_id": connection_id, "lease_owner": owner},
        {"$set": {"lease_expires_at": _lease_until(timezone.now())}},
    )
    return bool(renewed.matched_count)


def connection_lease_release(*, connection_id: object, owner: str) -> bool:
    """Give the lease back, only if this owner still holds it (never someone else's)."""
    released = _connections().update_one(
        {"_id": connection_id, "lease_owner": owner},
        {"$set": {"lease_owner": "", "lease_expires_at": None}},
    )
    return bool(released.matched_count)


def connection_lease_holder(*, connection_id: object) -> datetime | None:
    """Until when a sync holds the connection's lease; None when none does."""
    document = _connections().find_one({"_id": connection_id}, projection={"lease_expires_at": 1})
    until = (document or {}).get("lease_expires_at")  # the plain client is tz-aware
    return until if until is not None and until > timezone.now() else None


# --- Windows waiting for a fetch -----------------------------------------------------------------


class PendingWindow(NamedTuple):
    """Days of one stream waiting for a fetch. ``asked`` counts the notifications that named
    them, so a fetch takes the window off the queue only if no notification came while it ran."""

    first: date
    last: date
    asked: int


def window_queue(*, connection_id: object, stream: str, first: date, last: date) -> None:
    """Add these days to the stream's pending window, merged with what waits already.

    One atomic update ($min/$max over ISO dates, which order as strings; $inc of ``asked``), so
    concurrent notifications merge rather than overwrite each other.
    """
    _connections().update_one(
        {"_id": connection_id},
        {
            "$min": {f"pending_windows.{stream}.first": first.isoformat()},
            "$max": {f"pending_windows.{stream}.last": last.isoformat()},
            "$inc": {f"pending_windows.{stream}.asked": 1},
        },
    )


def windows_pending(*, connection_id: object) -> dict[str, PendingWindow]:
    """The pending windows by stream; malformed entries are dropped from the queue."""
    document = _connections().find_one({"_id": connection_id}, projection={"pending_windows": 1})
    pending = (document or {}).get("pending_windows") or {}
    windows = {}
    for stream, window in pending.items():
        try:
            windows[stream] = PendingWindow(
                date.fromisoformat(window["first"]),
                date.fromisoformat(window["last"]),
                int(window["asked"]),
            )
        except (KeyError, TypeError, ValueError):
            _connections().update_one(
                {"_id": connection_id}, {"$unset": {f"pending_windows.{stream}": ""}}
            )
    return windows


def window_done(*, connection_id: object, stream: str, window: PendingWindow) -> bool:
    """Take a fetched window off the queue, unless a notification named the stream again while
    it was fetched (even the same days: they may have changed after their page was read). Then
    it stays, for the next window run."""
    done = _connections().update_one(
        {"_id": connection_id, f"pending_windows.{stream}.asked": window.asked},
        {"$unset": {f"pending_windows.{stream}": ""}},
    )
    return bool(done.modified_count)


def dispatch_due_syncs(*, now: datetime | None = None, enqueue: bool = True) -> list[str]:
    """Claim what is due and enqueue its syncs; the ids claimed.

    The claimed connections are enqueued in groups of ``SIBLING_SYNC_THREADS``, one task per
    group (``ingestion.tasks.sync_connections``), so the worker that takes a group syncs its
    connections at once; each group is enqueued as soon as it is full.
    """
    now = now or timezone.now()
    size = max(1, settings.SIBLING_SYNC_THREADS)
    claimed = []
    group: list[tuple[object, str]] = []
    for connection_id in _due_unleased(now, settings.SIBLING_DISPATCH_BATCH):
        owner = connection_claim(connection_id=connection_id, now=now)
        if owner is None:
            continue
        claimed.append(str(connection_id))
        group.append((connection_id, owner))
        if len(group) == size:
            if enqueue:
                _enqueue_group(group, "schedule")
            group = []
    if group and enqueue:
        _enqueue_group(group, "schedule")
    return claimed


def _due_query(now: datetime) -> dict:
    """The connections due at ``now``: exactly the fields of the (status, next_sync_at) index.

    The lease is left out on purpose: on the embedded server a second range condition beside
    ``next_sync_at`` turns the query into a collection scan (3.6 s at 100,000 connections, 100
    due), while this one reads the due entries of the index alone.
    """
    return {"status": Status.ACTIVE, "next_sync_at": {"$lte": now}}


def _due_unleased(now: datetime, limit: int) -> list[object]:
    """The ids of up to ``limit`` due connections nobody holds, the longest due first.

    Due connections still leased are syncs under way (they stay due until they end); they are
    passed over here, and each claim checks the lease again, atomically.
    """
    ids: list[object] = []
    with _connections().find(
        _due_query(now),
        projection={"_id": 1, "lease_expires_at": 1},
        sort=[("next_sync_at", 1)],
        batch_size=limit,
    ) as due:
        for document in due:
            until = document.get("lease_expires_at")
            if until is not None and until >= now:
                continue
            ids.append(document["_id"])
            if len(ids) >= limit:
                break
    return ids


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


def _enqueue_group(group: list[tuple[object, str]], trigger: str) -> None:
    if len(group) == 1:
        _enqueue(*group[0], trigger)
        return
    first = group[0][0]
    async_task(
        "ingestion.tasks.sync_connections",
        [[str(connection_id), owner] for connection_id, owner in group],
        trigger,
        task_name=f"syncs-{first}-and-{len(group) - 1}",
        broker=broker(),
    )


def windows_fetch_enqueue(*, connection_id: object) -> None:
    """Fetch the connection's pending windows in a task of their own (it takes the lease, or
    leaves them queued for the holder's release to start again)."""
    async_task(
        "ingestion.tasks.fetch_windows",
        str(connection_id),
        task_name=f"windows-{connection_id}",
        broker=broker(),
    )


def dispatch_schedule_ensure() -> None:
    schedule_ensure(name=DISPATCH_SCHEDULE_NAME, func="ingestion.tasks.dispatch")
