"""One sync of one connection, from its stored cursors to its next schedule.

For each stream: ask the client for pages from the stored cursor; run each page through the
provider's processor; keep the raw page (encrypted); store the records; only then advance the
cursor. A sync killed anywhere resumes from the last stored page, losing and duplicating nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db.models import F
from django.utils import timezone

from ingestion.errors import Deferred, PersonErased, ReauthRequired, SyncError
from ingestion.http import CallCounter, RetryPolicy
from ingestion.models import SyncRun
from ingestion.scheduler import (
    PendingWindow,
    connection_claim,
    connection_lease_release,
    connection_lease_renew,
    connection_sync_enqueue,
    window_done,
    windows_fetch_enqueue,
    windows_pending,
)
from ingestion.storage import StoreCounts, page_store, raw_page_store
from sibling.logs import log_context
from sources.models import UserDataSource

if TYPE_CHECKING:
    from ingestion.clients import Page
    from sources.providers.base import Stream

logger = logging.getLogger(__name__)
Status = UserDataSource.Status
Outcome = SyncRun.Outcome
# A long sync renews its lease at most this often (and at least four times per lease).
LEASE_RENEW_S = 60
# What a run learns while it runs, written when it ends.
RUN_RESULT_FIELDS = (
    "outcome",
    "ended_at",
    "fetched",
    "created",
    "updated",
    "deleted",
    "quarantined",
    "api_calls",
    "rate_limited",
    "pages",
    "error_class",
    "error_message",
)
# Seconds before retrying a failed connection, by consecutive failures (then the last one).
FAILURE_BACKOFF_S = (60, 300, 900, 3600, 6 * 3600)


def _failure_delay(failures: int) -> timedelta:
    return timedelta(seconds=FAILURE_BACKOFF_S[min(failures, len(FAILURE_BACKOFF_S)) - 1])


def _cursor_commit(connection: UserDataSource, stream: str, cursor: Any) -> None:
    connection.cursors = {**connection.cursors, stream: cursor}
    UserDataSource.objects.filter(pk=connection.pk).update(cursors=connection.cursors)


class LeaseLost(SyncError):
    """This sync's lease expired and another sync took the connection: stop, touch nothing."""


class _Lease:
    """The lease this run holds, renewed as pages are stored (at most once per LEASE_RENEW_S)."""

    def __init__(self, connection_id: Any, owner: str) -> None:
        self.connection_id, self.owner = connection_id, owner
        self._renewed = time.monotonic()

    def keep(self) -> None:
        every = min(LEASE_RENEW_S, settings.SIBLING_SYNC_LEASE_S / 4)
        if time.monotonic() - self._renewed < every:
            return
        if not connection_lease_renew(connection_id=self.connection_id, owner=self.owner):
            raise LeaseLost("the sync's lease expired and another sync took the connection")
        self._renewed = time.monotonic()

    def release(self) -> bool:
        return connection_lease_release(connection_id=self.connection_id, owner=self.owner)


def connection_sync(
    connection_id: Any,
    *,
    trigger: str = SyncRun.Trigger.SCHEDULE,
    lease_owner: str = "",
    policy: RetryPolicy | None = None,
    on_page: Callable[[SyncRun, str, float | None], None] | None = None,
    windows: bool = False,
) -> SyncRun | None:
    """Sync one connection now, holding its lease. Returns its SyncRun, or None when it may not
    sync (not active, another sync holds the lease, or no window waits).

    ``lease_owner`` is the token of a lease the caller claimed (``connection_claim``); without
    one the runner claims the lease itself through the same claim, whether or not the connection
    is due. The runner never runs beside another holder, and releases only its own lease.
    ``on_page(run, stream, progress)`` is called after each stored page (progress bars).
    ``windows`` fetches the days that notifications queued on the connection
    (``pending_windows``) instead of its streams; it never moves cursors, and moves the schedule
    only as a failed run does (backoff, a provider's deferral).
    """
    if not lease_owner:
        lease_owner = connection_claim(connection_id=connection_id, due=False) or ""
        if not lease_owner:
            return None  # not active, or another sync holds the lease
    connection = UserDataSource.objects.filter(pk=connection_id).first()
    if connection is None or connection.lease_owner != lease_owner:
        return None  # the lease expired and someone else holds it now
    lease = _Lease(connection.pk, lease_owner)
    pending = windows_pending(connection_id=connection.pk) if windows else None
    if connection.status != Status.ACTIVE or (windows and not pending):
        lease.release()
        return None
    # This run holds the lease, so a run of this connection still "running" belongs to a sync
    # whose lease expired (a killed worker, or one that lost its lease): say so.
    SyncRun.objects.filter(connection=connection, outcome=Outcome.RUNNING).update(
        outcome=Outcome.FAILED,
        ended_at=timezone.now(),
        error_class="Interrupted",
        error_message="the worker stopped during the sync",
    )
    if not connection.cursors and trigger == SyncRun.Trigger.SCHEDULE and not windows:
        trigger = SyncRun.Trigger.BACKFILL
    run = SyncRun.objects.create(
        connection=connection,
        user_id=connection.user_id,
        provider=connection.provider,
        trigger=trigger,
        started_at=timezone.now(),
    )
    with log_context(provider=connection.provider, connection=connection.pk, run=run.pk):
        try:
            return _run(connection, run, trigger, policy, on_page, lease, pending)
        finally:
            _release(connection, lease, run)


def _release(connection: UserDataSource, lease: _Lease, run: SyncRun) -> None:
    """Give the lease back, then start what waited for it: queued windows, a requested sync."""
    if not lease.release():
        return  # not ours any more: whoever holds it now starts what waits
    # Queued windows follow a run that succeeded. After one that failed, was deferred or met the
    # erasure fence they stay queued for the next sync that succeeds, rather than calling at once
    # a provider that just failed or asked to wait, or fetching for a person being erased.
    if run.outcome in (Outcome.SUCCESS, Outcome.PARTIAL) and windows_pending(
        connection_id=connection.pk
    ):
        windows_fetch_enqueue(connection_id=connection.pk)
    # A sync asked for while this one ran ("Sync now", a provider's notification) moved
    # next_sync_at after this run's start and kept the connection due: start it now rather than
    # at the next dispatch. Only such a request: a run never restarts itself.
    if settings.SIBLING_SYNC_ON_DUE:
        asked = (
            UserDataSource.objects.filter(pk=connection.pk)
            .values_list("next_sync_at", flat=True)
            .first()
        )
        if asked is not None and run.started_at < asked <= timezone.now():
            connection_sync_enqueue(connection_id=connection.pk, trigger=SyncRun.Trigger.SCHEDULE)


def _plan(
    connection: UserDataSource, client: Any, windows: dict[str, PendingWindow] | None
) -> list[tuple[Stream, Iterator[Page], PendingWindow | None]]:
    provider = connection.provider_class
    if windows is None:
        return [
            (stream, client.pages(stream, connection.cursors.get(stream.name)), None)
            for stream in provider.streams
        ]
    plan = []
    known = {stream.name: stream for stream in provider.streams}
    for name, window in windows.items():
        if name not in known:
            window_done(connection_id=connection.pk, stream=name, window=window)
            continue
        stream = known[name]
        plan.append((stream, client.pages_between(stream, window.first, window.last), window))
    return plan


def _run(
    connection: UserDataSource,
    run: SyncRun,
    trigger: str,
    policy: RetryPolicy | None,
    on_page: Callable[[SyncRun, str, float | None], None] | None,
    lease: _Lease,
    windows: dict[str, PendingWindow] | None,
) -> SyncRun:
    provider = connection.provider_class
    counter = CallCounter()
    client = provider.sync_client_class()(
        connection, counter=counter, policy=policy or RetryPolicy()
    )
    processor = provider.processor()
    counts = StoreCounts()
    backfilling = connection.backfill_progress is not None and windows is None
    scheduled_at = connection.next_sync_at
    logger.info("sync started (%s)", "windows" if windows is not None else trigger)
    try:
        for stream, pages, window in _plan(connection, client, windows):
            for page in pages:
                # Before anything of the page is written: a sync that lost its lease stores
                # nothing more beside the new holder.
                lease.keep()
                processed = processor(stream.name, page.payload)
                raw = raw_page_store(
                    connection=connection, stream=stream.name, payload=page.payload, run=run
                )
                counts += page_store(
                    connection=connection,
                    stream=stream.name,
                    processed=processed,
                    raw_page_id=raw.pk,
                    run=run,
                )
                run.pages += 1
                run.fetched += (
                    len(processed.records) + len(processed.removed) + len(processed.quarantined)
                )
                if page.cursor is not None:
                    _cursor_commit(connection, stream.name, page.cursor)
                if backfilling and page.progress is not None:
                    UserDataSource.objects.filter(pk=connection.pk).update(
                        backfill_progress=round(page.progress, 3)
                    )
                if on_page is not None:
                    on_page(run, stream.name, page.progress)
            if window is not None:
                window_done(connection_id=connection.pk, stream=stream.name, window=window)
        run.outcome = Outcome.PARTIAL if counts.quarantined else Outcome.SUCCESS
        _succeeded(connection, counts, reschedule=windows is None, scheduled_at=scheduled_at)
    except PersonErased as err:
        # The person's erasure has begun: stop quietly, and schedule nothing more for them.
        run.outcome = Outcome.FAILED
        _failed(run, err)
        UserDataSource.objects.filter(pk=connection.pk).update(next_sync_at=None)
        logger.info("sync stopped: the person's data is being erased")
    except LeaseLost as err:
        # Another sync holds the connection now: leave its state to that sync.
        run.outcome = Outcome.FAILED
        _failed(run, err)
        logger.warning("sync stopped: its lease was taken over")
    except ReauthRequired as err:
        run.outcome = Outcome.FAILED
        _failed(run, err)
        UserDataSource.objects.filter(pk=connection.pk).update(
            status=Status.REAUTH_REQUIRED, last_error=provider.reauth_message, next_sync_at=None
        )
    except Deferred as err:
        run.outcome = Outcome.DEFERRED
        run.error_class, run.error_message = type(err).__name__, str(err)[:500]
        UserDataSource.objects.filter(pk=connection.pk).update(next_sync_at=err.until)
    except Exception as err:  # every failure ends the run as failed; nothing propagates
        run.outcome = Outcome.FAILED
        _failed(run, err)
        _failure_record(connection, err)
        if not isinstance(err, SyncError):
            logger.exception("sync crashed")
    finally:
        client.close()
        run.created, run.updated = counts.created, counts.updated
        run.deleted, run.quarantined = counts.deleted, counts.quarantined
        run.api_calls = counter.calls
        run.rate_limited = counter.rate_limited
        run.ended_at = timezone.now()
        # An update, not save(): a run deleted meanwhile (its person erased, its connection
        # deleted with its data) must stay deleted, and save() would insert it again.
        SyncRun.objects.filter(pk=run.pk).update(
            **{name: getattr(run, name) for name in RUN_RESULT_FIELDS}
        )
        logger.info(
            "sync ended: %s, %d fetched, %d created, %d updated, %d deleted, %d quarantined, "
            "%d API calls",
            run.outcome,
            run.fetched,
            run.created,
            run.updated,
            run.deleted,
            run.quarantined,
            run.api_calls,
        )
    return run


def _failed(run: SyncRun, err: Exception) -> None:
    run.error_class = type(err).__name__
    # SyncError messages are written to be safe; anything else is summarised by its class only.
    run.error_message = str(err)[:500] if isinstance(err, SyncError) else "unexpected error"


def _succeeded(
    connection: UserDataSource,
    counts: StoreCounts,
    *,
    reschedule: bool,
    scheduled_at: datetime | None,
) -> None:
    now = timezone.now()
    changes: dict[str, Any] = {
        "last_success_at": now,
        "last_error": "",
        "consecutive_failures": 0,
        "records_stored": F("records_stored") + counts.created - counts.deleted,
    }
    if reschedule:
        changes["backfill_progress"] = None
    UserDataSource.objects.filter(pk=connection.pk).update(**changes)
    if reschedule:
        # Only if nobody asked for a sync while this one ran (that request moved next_sync_at):
        # the request stands, and the release starts it.
        UserDataSource.objects.filter(pk=connection.pk, next_sync_at=scheduled_at).update(
            next_sync_at=now + timedelta(seconds=connection.sync_interval)
        )


def _failure_record(connection: UserDataSource, err: Exception) -> None:
    failures = connection.consecutive_failures + 1
    message = str(err)[:300] if isinstance(err, SyncError) else "An unexpected error occurred."
    changes: dict[str, Any] = {"consecutive_failures": failures, "last_error": message}
    if failures >= settings.SIBLING_SYNC_MAX_FAILURES:
        # The connection stops itself; the person and staff see why on their pages.
        changes.update(status=Status.ERROR, next_sync_at=None)
    else:
        changes["next_sync_at"] = timezone.now() + _failure_delay(failures)
    UserDataSource.objects.filter(pk=connection.pk).update(**changes)
