"""One sync of one connection, from its stored cursors to its next schedule.

For each stream: ask the client for pages from the stored cursor; run each page through the
provider's processor; keep the raw page (encrypted); store the records; only then advance the
cursor. A sync killed anywhere resumes from the last stored page, losing and duplicating nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

from django.conf import settings
from django.db.models import F
from django.utils import timezone

from ingestion.errors import Deferred, ReauthRequired, SyncError
from ingestion.http import CallCounter, RetryPolicy
from ingestion.models import SyncRun
from ingestion.storage import StoreCounts, page_store, raw_page_store
from sibling.logs import log_context
from sources.models import UserDataSource

logger = logging.getLogger(__name__)
Status = UserDataSource.Status
Outcome = SyncRun.Outcome
# Seconds before retrying a failed connection, by consecutive failures (then the last one).
FAILURE_BACKOFF_S = (60, 300, 900, 3600, 6 * 3600)


def _failure_delay(failures: int) -> timedelta:
    return timedelta(seconds=FAILURE_BACKOFF_S[min(failures, len(FAILURE_BACKOFF_S)) - 1])


def _cursor_commit(connection: UserDataSource, stream: str, cursor: Any) -> None:
    connection.cursors = {**connection.cursors, stream: cursor}
    UserDataSource.objects.filter(pk=connection.pk).update(cursors=connection.cursors)


def connection_sync(
    connection_id: Any,
    *,
    trigger: str = SyncRun.Trigger.SCHEDULE,
    lease_owner: str = "",
    policy: RetryPolicy | None = None,
    on_page: Callable[[SyncRun, str, float | None], None] | None = None,
    window: tuple[str, date, date] | None = None,
) -> SyncRun | None:
    """Sync one connection now. Returns its SyncRun, or None when it may not sync.

    ``on_page(run, stream, progress)`` is called after each stored page (progress bars).
    ``window=(stream, first_day, last_day)`` fetches exactly those days of one stream (what a
    provider's notification names) and leaves cursors and schedule alone.
    """
    connection = UserDataSource.objects.filter(pk=connection_id).first()
    if connection is None or connection.status != Status.ACTIVE:
        return None
    if lease_owner and connection.lease_owner != lease_owner:
        return None  # the lease expired and someone else holds it now
    # A run still "running" here was cut off (a killed worker); say so.
    SyncRun.objects.filter(connection=connection, outcome=Outcome.RUNNING).update(
        outcome=Outcome.FAILED,
        ended_at=timezone.now(),
        error_class="Interrupted",
        error_message="the worker stopped during the sync",
    )
    if not connection.cursors and trigger == SyncRun.Trigger.SCHEDULE:
        trigger = SyncRun.Trigger.BACKFILL
    run = SyncRun.objects.create(
        connection=connection,
        user_id=connection.user_id,
        provider=connection.provider,
        trigger=trigger,
        started_at=timezone.now(),
    )
    with log_context(provider=connection.provider, connection=connection.pk, run=run.pk):
        return _run(connection, run, trigger, policy, on_page, window)


def _run(
    connection: UserDataSource,
    run: SyncRun,
    trigger: str,
    policy: RetryPolicy | None,
    on_page: Callable[[SyncRun, str, float | None], None] | None,
    window: tuple[str, date, date] | None,
) -> SyncRun:
    provider = connection.provider_class
    counter = CallCounter()
    client = provider.sync_client_class()(
        connection, counter=counter, policy=policy or RetryPolicy()
    )
    processor = provider.processor()
    counts = StoreCounts()
    backfilling = connection.backfill_progress is not None
    logger.info("sync started (%s)", trigger)
    if window is None:
        plan = [
            (stream, client.pages(stream, connection.cursors.get(stream.name)))
            for stream in provider.streams
        ]
    else:
        stream = next(s for s in provider.streams if s.name == window[0])
        plan = [(stream, client.pages_between(stream, window[1], window[2]))]
    try:
        for stream, pages in plan:
            for page in pages:
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
        run.outcome = Outcome.PARTIAL if counts.quarantined else Outcome.SUCCESS
        _succeeded(connection, counts, reschedule=window is None)
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
        run.save()
        UserDataSource.objects.filter(pk=connection.pk).update(
            lease_owner="", lease_expires_at=None
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


def _succeeded(connection: UserDataSource, counts: StoreCounts, *, reschedule: bool) -> None:
    now = timezone.now()
    changes: dict[str, Any] = {
        "last_success_at": now,
        "last_error": "",
        "consecutive_failures": 0,
        "records_stored": F("records_stored") + counts.created - counts.deleted,
    }
    if reschedule:
        changes.update(
            backfill_progress=None, next_sync_at=now + timedelta(seconds=connection.sync_interval)
        )
    UserDataSource.objects.filter(pk=connection.pk).update(**changes)


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
