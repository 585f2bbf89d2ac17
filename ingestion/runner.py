"""One sync of one connection, from its stored cursors to its next schedule.

For each stream: ask the client for pages from the stored cursor; run each page through the
provider's processor; keep the raw page (encrypted); store the records; only then advance the
cursor. A sync killed anywhere resumes from the last stored page, losing and duplicating nothing.

Pages are fetched in a thread of the sync's own while the page before is processed and stored
(at most ``SIBLING_SYNC_PREFETCH_PAGES`` fetched pages wait), so a provider's round trip and the
store overlap. What the sync sees stays in order: a page's cursor is committed only once the page
is stored, and a failed fetch is met after every page before it is stored. A client that reads
what its own sync stored first calls ``sync_pages_stored_wait``. ``connections_sync`` drives
several claimed syncs at once on one worker process (``SIBLING_SYNC_THREADS``).
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from django.conf import settings
from django.db import connections
from django.db.models import F
from django.utils import timezone

from ingestion.errors import Deferred, PersonErased, ReauthRequired, SyncError
from ingestion.http import CallCounter, RetryPolicy
from ingestion.models import SyncRun
from ingestion.notifications import connection_reauth_required
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
from outbound.emit import records_changed_emit
from sibling.logs import log_context
from sibling.tracing import span
from sources.models import UserDataSource
from sources.signals import STOPPED, connection_changed_send

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


# --- Fetching ahead ------------------------------------------------------------------------------


class _Fetched(NamedTuple):
    """What the fetcher hands over: a stream's next page, or (``page`` None) its pages' end."""

    stream: Stream
    page: Page | None
    window: PendingWindow | None


def _fetched(plan: list[tuple[Stream, Iterator[Page], PendingWindow | None]]) -> Iterator[_Fetched]:
    """Every stream's pages in order, each stream followed by its end; a span per fetch."""
    try:
        for stream, pages, window in plan:
            while True:
                with span("sync.page.fetch", stream=stream.name):
                    page = next(pages, None)
                if page is None:
                    break
                yield _Fetched(stream, page, window)
            yield _Fetched(stream, None, window)
    finally:
        # Stopped early (an error, a lost lease, a deferral): end the clients' generators now, in
        # the thread that ran them, rather than whenever they are collected.
        for _, pages, _ in plan:
            close = getattr(pages, "close", None)
            if close is not None:
                close()


_PAGE, _END, _ERROR = "page", "end", "error"
_current_fetcher: contextvars.ContextVar[_Prefetch | None] = contextvars.ContextVar(
    "sync_fetcher", default=None
)


class _Prefetch:
    """Runs ``items`` in a thread of its own, at most ``ahead`` items ahead of the caller.

    The caller iterates it as it would ``items``: the same items in the same order, then the same
    end or the same exception, raised only once every item before it was taken. An item counts
    against ``ahead`` from the moment its fetch begins until the caller takes it, so at most
    ``ahead`` fetched items wait beside the one the caller holds (memory stays flat).
    ``close()`` stops the fetcher after the fetch under way, if any, and waits for its thread,
    which closes ``items`` and its own database connection as it ends. The thread runs in a copy
    of the caller's context, so log fields and the current trace span follow it.
    """

    def __init__(self, items: Iterator[Any], *, ahead: int, name: str) -> None:
        self._items = items
        self._ahead = ahead
        self._changed = threading.Condition()
        self._ready: deque[tuple[str, Any]] = deque()
        self._started = 0  # fetches begun
        self._handed = 0  # items handed over
        self._taken = 0  # items the caller took
        # Times the caller asked for an item: it is done with every item but the one it asks for.
        self._asked = 0
        self._stopping = False
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._fetch,), name=name, daemon=True
        )
        self._thread.start()

    def __iter__(self) -> _Prefetch:
        return self

    def __next__(self) -> Any:
        with self._changed:
            self._asked += 1
            self._changed.notify_all()
            while not self._ready:
                if self._stopping:
                    raise StopIteration
                self._changed.wait()
            kind, value = self._ready.popleft()
            self._taken += 1
            if kind != _PAGE:
                self._stopping = True  # nothing follows an end or an error
            self._changed.notify_all()
        if kind == _END:
            raise StopIteration
        if kind == _ERROR:
            raise value
        return value

    def close(self) -> None:
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        self._thread.join()

    def caught_up_wait(self) -> None:
        """(In the fetcher.) Wait until the caller is done with every item handed over."""
        with self._changed:
            while not self._stopping and self._asked <= self._handed:
                self._changed.wait()

    def _hand(self, kind: str, value: Any) -> None:
        with self._changed:
            self._ready.append((kind, value))
            self._handed += 1
            self._changed.notify_all()

    def _fetch(self) -> None:
        _current_fetcher.set(self)
        try:
            while True:
                with self._changed:
                    while not self._stopping and self._started - self._taken >= self._ahead:
                        self._changed.wait()
                    if self._stopping:
                        return
                    self._started += 1
                try:
                    item = next(self._items)
                except StopIteration:
                    self._hand(_END, None)
                    return
                except BaseException as err:  # the caller meets it in its place, in its thread
                    self._hand(_ERROR, err)
                    return
                self._hand(_PAGE, item)
        finally:
            try:
                close = getattr(self._items, "close", None)
                if close is not None:
                    close()
            finally:
                # Django opened a connection for this thread; the thread ends with it.
                _db_connections_close()


def _db_connections_close() -> None:
    """Close this thread's Django database connections (the client pool they share stays)."""
    connections.close_all()


def sync_pages_stored_wait() -> None:
    """Wait until every page the sync's fetcher handed over is stored (with its cursor).

    For a client about to read what its own sync stored (the records to forget, say): with
    pages fetched ahead, the pages it yielded last may still be on their way to storage. Outside
    a sync's fetcher thread, or when the sync does not fetch ahead, it returns at once.
    """
    fetcher = _current_fetcher.get()
    if fetcher is not None:
        fetcher.caught_up_wait()


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
    with (
        log_context(provider=connection.provider, connection=connection.pk, run=run.pk),
        span("sync", provider=connection.provider, connection=str(connection.pk), trigger=trigger),
    ):
        try:
            return _run(connection, run, trigger, policy, on_page, lease, pending)
        finally:
            _release(connection, lease, run)


def connections_sync(
    claims: Sequence[tuple[Any, str]],
    *,
    trigger: str = SyncRun.Trigger.SCHEDULE,
    threads: int | None = None,
    policy: RetryPolicy | None = None,
) -> list[str]:
    """Run several claimed syncs at once, each on a thread of its own (at most ``threads``,
    by default ``SIBLING_SYNC_THREADS``); the outcome of each, in the order given.

    ``claims`` are (connection id, lease owner) pairs from ``connection_claim``: each sync runs
    under its own lease exactly as ``connection_sync`` runs it alone, so a pair whose lease was
    lost (or delivered twice) is "skipped", never run beside the holder. One sync's failure never
    stops the others; one that raised (its run could not even be recorded) is raised again once
    all have ended, so the task fails and is retried, and the pairs already run are skipped then.
    """
    if not claims:
        return []
    workers = max(1, min(len(claims), threads or settings.SIBLING_SYNC_THREADS))

    def one(connection_id: Any, owner: str) -> str:
        try:
            run = connection_sync(connection_id, trigger=trigger, lease_owner=owner, policy=policy)
            return run.outcome if run is not None else "skipped"
        finally:
            _db_connections_close()

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sync") as pool:
        # A context copy for each sync: one context cannot be entered by two threads at once.
        futures = [
            pool.submit(contextvars.copy_context().run, one, connection_id, owner)
            for connection_id, owner in claims
        ]
        errors = [future.exception() for future in futures]
    for (connection_id, _), error in zip(claims, errors, strict=True):
        if error is not None:
            logger.error("sync of connection %s raised %s", connection_id, type(error).__name__)
    raised = next((error for error in errors if error is not None), None)
    if raised is not None:
        raise raised
    return [future.result() for future in futures]


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
    fetcher: Iterator[_Fetched] | None = None
    erased = False
    try:
        fetcher = _fetcher_start(_fetched(_plan(connection, client, windows)), connection)
        for stream, page, window in fetcher:
            if page is None:  # the stream's pages are all stored
                if window is not None:
                    window_done(connection_id=connection.pk, stream=stream.name, window=window)
                continue
            with span("sync.page", stream=stream.name):
                # Before anything of the page is written: a sync that lost its lease stores
                # nothing more beside the new holder.
                lease.keep()
                with span("sync.page.process"):
                    processed = processor(stream.name, page.payload)
                with span("sync.page.store"):
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
        run.outcome = Outcome.PARTIAL if counts.quarantined else Outcome.SUCCESS
        _succeeded(connection, counts, reschedule=windows is None, scheduled_at=scheduled_at)
    except PersonErased as err:
        # The person's erasure has begun: stop quietly, and schedule nothing more for them.
        erased = True
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
        # Heard once per change of status; a connection the person disconnected meanwhile
        # (which revoked the grant this sync held) stays disconnected.
        connection_reauth_required(connection)
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
        # The fetcher first (it may be using the client), whatever stopped the run, even a
        # BaseException such as the worker being stopped.
        if fetcher is not None:
            _fetcher_stop(fetcher)
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
        if not erased:
            # What the run changed, stored for subscribers (at most one insert; never raises).
            records_changed_emit(
                user_id=connection.user_id,
                provider=connection.provider,
                counts=counts,
                run_id=run.pk,
                connection_id=connection.pk,
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


def _fetcher_start(items: Iterator[_Fetched], connection: UserDataSource) -> Iterator[_Fetched]:
    """The pages fetched ahead in a thread (``SIBLING_SYNC_PREFETCH_PAGES``), or in this thread
    as they are asked for when that is 0."""
    ahead = settings.SIBLING_SYNC_PREFETCH_PAGES
    if ahead <= 0:
        return items
    return _Prefetch(items, ahead=ahead, name=f"sync-fetch-{connection.pk}")


def _fetcher_stop(fetcher: Iterator[_Fetched]) -> None:
    close = getattr(fetcher, "close", None)
    if close is not None:
        close()


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
    # A connection the person disconnected while this sync ran stays disconnected.
    changed = (
        UserDataSource.objects.filter(pk=connection.pk)
        .exclude(status=Status.DISCONNECTED)
        .update(**changes)
    )
    if changed and changes.get("status") == Status.ERROR and connection.status != Status.ERROR:
        connection.status = Status.ERROR
        connection_changed_send(connection, STOPPED)
