"""`make bench-latency`: syncs as production sees them, with round trips of 100 ms and quotas.

1. Starts the embedded database (throwaway) and the app with its provider sandbox under gunicorn
   (threaded workers, so the injected sleeps overlap instead of queueing), the sandbox answering
   every request after 100 ms ± 20% (SIBLING_SANDBOX_LATENCY_MS) and enforcing its quotas. The
   backfill window is 7 days (SIBLING_BACKFILL_DAYS): a first sync of a week.
2. A Gmail backfill of at least 5,000 messages for one person (a mailbox seeded with that many
   in the window), under a per-user quota scaled down from Google's: the sandbox enforces
   `gmail.user=N` units a minute and the client's budget is told the same N (GMAIL_BUDGET_USER,
   default 40,000: 33 messages a second, see GMAIL_USER_UNITS). Its speed against the quota's is
   `quota_utilization`; `rate_limited_calls` counts the answers over quota (429, 403, whole
   answers or parts of a batch) that reached this process during it.
3. A fleet of 200 connections of 200 people (50 Gmail, 75 Plaid, 75 Google Health, each a first
   sync of the window) due at once, dispatched as the scheduler does and run by the same task
   code a worker runs, one task at a time in this one process: each task drives a group of
   SIBLING_SYNC_THREADS (here 50) syncs on threads. CPU time of this process per stored record
   (resource.getrusage: the database and the sandbox are other processes) and its peak RSS.
4. The same 200 connections reset (cursors, records and raw pages cleared) and synced one at a
   time, one after the other, as a worker without concurrency would.

The last line printed is one JSON object with the figures; the line before it (stderr) gives
the counts they come from, and the CPU the sandbox and the database used in each phase. This
machine is shared and small (2 cores for the database, the sandbox and the syncs): read the
ratios and the quota figures, not absolute speeds.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from ingestion.benchmarks.harness import (
    app_under_gunicorn,
    children_cpu_s,
    peak_rss_mb,
    process_cpu_s,
    queued_tasks_run,
)

LATENCY_MS = 100
BACKFILL_DAYS = 7
GMAIL_MESSAGES = 5_000
# Units a minute for one Gmail user. 100,000 would make 5,000 messages.get (20 units each under
# the 2026 table) a minute's work, but the sandbox's Gmail answers a batch part in 10-15 ms of
# its own CPU on a 2-core machine (several queries to the embedded database per part), about
# 60 messages a second at best: the quota, not the sandbox, must be what paces the sync, so the
# default is 40,000 (33 messages a second, 5,000 in 2.5 minutes). BENCH_GMAIL_USER_UNITS sets it.
GMAIL_USER_UNITS = int(os.environ.get("BENCH_GMAIL_USER_UNITS", "40000"))
# The fleet: 200 connections of three providers, each a person of its own.
FLEET = {"gmail": 50, "plaid": 75, "fitbit": 75}
SYNC_THREADS = os.environ.get("SIBLING_SYNC_THREADS", "50")
SETUP_THREADS = 16


class Answers:
    """Statuses of the provider answers this process receives (every client, requests and
    plaid-python alike, goes through urllib3's connection pool)."""

    def __init__(self) -> None:
        self.statuses: Counter[int] = Counter()
        self._lock = threading.Lock()

    def install(self) -> None:
        from urllib3.connectionpool import HTTPConnectionPool

        original = HTTPConnectionPool.urlopen
        answers = self

        def urlopen(pool: Any, *args: Any, **kwargs: Any) -> Any:
            response = original(pool, *args, **kwargs)
            with answers._lock:
                answers.statuses[response.status] += 1
            return response

        HTTPConnectionPool.urlopen = urlopen  # type: ignore[method-assign]

    def rate_limited(self) -> int:
        """Answers over a quota: 429, and 403 (Gmail's per-user rate limit; no other 403 is
        expected in this benchmark, so any is counted against it)."""
        return self.statuses[429] + self.statuses[403]

    def reset(self) -> None:
        with self._lock:
            self.statuses.clear()


def main() -> int:
    answers = Answers()
    answers.install()
    with app_under_gunicorn(
        database="bench_latency",
        # Threads, not processes, answer concurrent requests: a worker sleeping through the
        # injected latency holds a thread, never the process.
        gunicorn_args=["--workers", "2", "--worker-class", "gthread", "--threads", "64"],
        env={
            "SIBLING_SANDBOX_LATENCY_MS": str(LATENCY_MS),
            "SIBLING_SANDBOX_QUOTAS": f"gmail.user={GMAIL_USER_UNITS}",
            "GMAIL_BUDGET_USER": str(GMAIL_USER_UNITS),
            "SIBLING_SYNC_THREADS": SYNC_THREADS,
            "SIBLING_BACKFILL_DAYS": str(BACKFILL_DAYS),
            "SIBLING_SANDBOX_SEND_WEBHOOKS": "0",
            "SIBLING_Q_TIMEOUT": "1800",
        },
    ):
        detail, figures = run(answers)
    print(json.dumps(detail), file=sys.stderr)
    print(json.dumps(figures))
    return 0


def run(answers: Answers) -> tuple[dict, dict]:
    from django.conf import settings

    # This process syncs as a production worker does. DEBUG (on in the harness, so that the
    # sandbox is served) makes Django's MongoDB backend deep-copy and keep every operation it
    # sends, payloads included, in each thread's query log: CPU and memory no worker spends.
    settings.DEBUG = False
    gmail = gmail_backfill(answers)
    connections = _in_threads(_fleet_connection, _fleet_plan())
    fleet = fleet_sync(connections)
    rss = peak_rss_mb()
    _reset(connections)
    sequential = sequential_sync(connections)
    figures = {
        "gmail_msgs_per_s": round(gmail["msgs_per_s"], 1),
        "gmail_quota_msgs_per_s": round(gmail["quota_msgs_per_s"], 1),
        "quota_utilization": round(gmail["msgs_per_s"] / gmail["quota_msgs_per_s"], 3),
        "rate_limited_calls": gmail["rate_limited"],
        "fleet_records_per_s": round(fleet["records"] / fleet["seconds"], 1),
        "fleet_connections_per_min": round(fleet["synced"] / fleet["seconds"] * 60, 1),
        "peak_rss_mb": round(rss, 1),
        "pipeline_cpu_us_per_record": round(fleet["cpu_s"] / max(1, fleet["records"]) * 1e6, 1),
        "sequential_fleet_records_per_s": round(sequential["records"] / sequential["seconds"], 1),
    }
    detail = {
        "gmail": gmail,
        "fleet": fleet,
        "sequential": sequential,
        "fleet_vs_sequential": round(
            figures["fleet_records_per_s"] / max(0.1, figures["sequential_fleet_records_per_s"]),
            2,
        ),
        "sync_threads": int(SYNC_THREADS),
        "latency_ms": LATENCY_MS,
        "backfill_days": BACKFILL_DAYS,
    }
    return detail, figures


# --- 1. One Gmail backfill at the quota ---------------------------------------------------------


def _gmail_quota_msgs_per_s() -> float:
    """The per-user quota in messages a second: the limit over the cost of one messages.get."""
    from sources.providers.gmail import Gmail

    cost, window_s = 20, 60
    declared = getattr(Gmail, "budgets_declared", None)
    for budget in declared() if declared else ():
        if budget.name == "user":
            cost, window_s = budget.cost("messages.get"), budget.window_s
    return GMAIL_USER_UNITS / cost / window_s


def gmail_backfill(answers: Answers) -> dict:
    from django.contrib.auth import get_user_model

    from ingestion.http import RetryPolicy
    from ingestion.models import SyncRun
    from ingestion.runner import connection_sync
    from sources.models import UserDataSource
    from sources.providers.gmail import Gmail
    from sources.providers.gmail.sandbox import mailbox_size_set
    from sources.sandbox.testing import google_credentials
    from sources.services import connection_upsert

    email = "bench.mailbox@example.com"
    # Every day of the window full enough that the window holds at least 5,000 messages (the
    # first and the last day of the window are partial).
    mailbox_size_set(email, math.ceil(GMAIL_MESSAGES / (BACKFILL_DAYS - 1)))
    person = get_user_model().objects.create_user("bench-mailbox", email)
    connection = connection_upsert(
        user=person,
        provider=Gmail,
        external_account_id=email,
        credentials=google_credentials(Gmail, email),
    )
    policy = RetryPolicy(sleep=time.sleep)
    answers.reset()
    cpu, others = process_cpu_s(), children_cpu_s()
    started = time.perf_counter()
    runs = []
    # A budget that cannot wait defers the sync (its cursor kept): run it again when due, as the
    # scheduler would, until the backfill is done.
    for _ in range(20):
        run = connection_sync(connection.pk, policy=policy)
        runs.append(run)
        if run is None or run.outcome != SyncRun.Outcome.DEFERRED:
            break
        due = UserDataSource.objects.get(pk=connection.pk).next_sync_at
        time.sleep(max(0.0, (due - run.ended_at).total_seconds()) if due else 1.0)
    seconds = time.perf_counter() - started
    cpu, others = process_cpu_s() - cpu, children_cpu_s() - others
    _check(runs, "the Gmail backfill")
    messages = sum(r.created + r.updated for r in runs)
    if messages < GMAIL_MESSAGES:
        raise RuntimeError(f"the Gmail backfill stored {messages} messages")
    return {
        "messages": messages,
        "seconds": round(seconds, 1),
        "msgs_per_s": messages / seconds,
        "quota_msgs_per_s": _gmail_quota_msgs_per_s(),
        "quota_units_per_min": GMAIL_USER_UNITS,
        # Whole answers over quota seen on the wire, or the runs' own count, which includes the
        # parts of a batch answered 429/403 inside its 200: whichever is larger.
        "rate_limited": max(answers.rate_limited(), sum(r.rate_limited for r in runs)),
        "rate_limited_answers": answers.rate_limited(),
        "rate_limited_in_runs": sum(r.rate_limited for r in runs),
        "runs": len(runs),
        "api_calls": sum(r.api_calls for r in runs),
        "statuses": dict(sorted(answers.statuses.items())),
        "cpu_s": round(cpu, 2),
        "sandbox_and_database_cpu_s": round(others, 2),
    }


def _check(runs: Iterable[Any], what: str) -> None:
    failed = [r for r in runs if r is None or r.outcome not in ("success", "partial", "deferred")]
    if failed:
        first = failed[0]
        raise RuntimeError(
            f"{len(failed)} syncs failed in {what}: "
            f"{first and (first.provider, first.outcome, first.error_message)}"
        )


# --- 2. The fleet ------------------------------------------------------------------------------


def _fleet_plan() -> list[tuple[str, int]]:
    # Interleaved, so every group of syncs a task drives holds each provider in proportion.
    plan = [(provider, n) for provider, count in FLEET.items() for n in range(count)]
    return sorted(plan, key=lambda item: (item[1] / FLEET[item[0]], item[0]))


def _in_threads(func: Callable[[Any], Any], items: list) -> list:
    from django import db

    def call(item: Any) -> Any:
        try:
            return func(item)
        finally:
            db.connections.close_all()

    with ThreadPoolExecutor(SETUP_THREADS) as pool:
        return list(pool.map(call, items))


def _fleet_connection(item: tuple[str, int]) -> Any:
    """One person and their first connection, made as the person's browser makes it."""
    from django.contrib.auth import get_user_model

    from sources.providers.fitbit import Fitbit
    from sources.providers.gmail import Gmail
    from sources.providers.plaid import Plaid
    from sources.providers.plaid.sandbox import plaid_item_link
    from sources.sandbox.testing import google_credentials
    from sources.services import connection_upsert

    provider_id, n = item
    username = f"fleet-{provider_id}-{n}"
    email = f"{username}@example.com"
    person = get_user_model().objects.create_user(username, email)
    if provider_id == "plaid":
        item_link = plaid_item_link(client_user_id=str(person.pk), days_requested=BACKFILL_DAYS)
        return connection_upsert(
            user=person,
            provider=Plaid,
            external_account_id=item_link["item_id"],
            credentials=item_link,
            account_label="Bank",
        )
    provider = {"gmail": Gmail, "fitbit": Fitbit}[provider_id]
    return connection_upsert(
        user=person,
        provider=provider,
        external_account_id=email,
        credentials=google_credentials(provider, email),
    )


def _all_due(connections: list) -> None:
    from django.utils import timezone

    from sources.models import UserDataSource

    UserDataSource.objects.filter(pk__in=[c.pk for c in connections]).update(
        next_sync_at=timezone.now() - timedelta(minutes=1)
    )


def _runs_of(connections: list, since: Any) -> list:
    from ingestion.models import SyncRun

    return list(
        SyncRun.objects.filter(connection__in=[c.pk for c in connections], started_at__gte=since)
    )


def _summary(runs: list, seconds: float) -> dict:
    by_provider: dict[str, Counter] = {}
    for r in runs:
        counts = by_provider.setdefault(r.provider, Counter())
        counts["runs"] += 1
        counts["records"] += r.created + r.updated
        counts["api_calls"] += r.api_calls
        counts[r.outcome] += 1
        counts["seconds"] += round((r.ended_at - r.started_at).total_seconds(), 2)
    return {
        "seconds": round(seconds, 1),
        "records": sum(r.created + r.updated for r in runs),
        "synced": sum(1 for r in runs if r.outcome in ("success", "partial")),
        "api_calls": sum(r.api_calls for r in runs),
        "rate_limited": sum(r.rate_limited for r in runs),
        "by_provider": {name: dict(counts) for name, counts in sorted(by_provider.items())},
    }


def fleet_sync(connections: list) -> dict:
    """Everything due at once: one dispatch, then the tasks it queued, as one worker process
    runs them."""
    from django.utils import timezone

    from ingestion.scheduler import dispatch_due_syncs

    _all_due(connections)
    since = timezone.now()
    cpu, others = process_cpu_s(), children_cpu_s()
    started = time.perf_counter()
    claimed = dispatch_due_syncs()
    tasks = queued_tasks_run("ingestion.tasks.sync_connection")
    seconds = time.perf_counter() - started
    cpu_s, others = process_cpu_s() - cpu, children_cpu_s() - others
    runs = _runs_of(connections, since)
    _check(runs, "the fleet")
    if len(claimed) != len(connections):
        raise RuntimeError(f"dispatch claimed {len(claimed)} of {len(connections)}")
    return {
        **_summary(runs, seconds),
        "tasks": tasks,
        "cpu_s": round(cpu_s, 2),
        "sandbox_and_database_cpu_s": round(others, 2),
    }


# --- 3. The same connections, one at a time ----------------------------------------------------


def _reset(connections: list) -> None:
    """Back to before their first sync: no cursor, no record, no kept page."""
    from ingestion.models import RawPage
    from ingestion.schemas import CATEGORY_COLLECTIONS
    from ingestion.storage import records_collection
    from sources.models import UserDataSource

    ids = [c.pk for c in connections]
    people = [c.user_id for c in connections]
    for name in set(CATEGORY_COLLECTIONS.values()):
        records_collection(name).delete_many({"user": {"$in": people}})
    RawPage.objects.filter(connection__in=ids).delete()
    UserDataSource.objects.filter(pk__in=ids).update(
        cursors={}, records_stored=0, backfill_progress=0, lease_owner="", lease_expires_at=None
    )


def sequential_sync(connections: list) -> dict:
    from django.utils import timezone

    from ingestion.http import RetryPolicy
    from ingestion.runner import connection_sync

    _all_due(connections)
    policy = RetryPolicy(sleep=time.sleep)
    since = timezone.now()
    cpu, others = process_cpu_s(), children_cpu_s()
    started = time.perf_counter()
    for connection in connections:
        connection_sync(connection.pk, policy=policy)
    seconds = time.perf_counter() - started
    runs = _runs_of(connections, since)
    _check(runs, "the sequential syncs")
    return {
        **_summary(runs, seconds),
        "cpu_s": round(process_cpu_s() - cpu, 2),
        "sandbox_and_database_cpu_s": round(children_cpu_s() - others, 2),
    }


if __name__ == "__main__":
    sys.exit(main())
