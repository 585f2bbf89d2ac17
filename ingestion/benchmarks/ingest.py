"""`make bench`: the scheduled-ingestion pipeline against its ceiling, in one run.

1. Starts the embedded database (a throwaway SecantusDB) and the app with its provider sandbox
   under gunicorn.
2. Backfills >= 20,000 Plaid transactions (several sandbox banks) and >= 20,000 Google Health
   data points (one Fitbit account, 90 days) through the real clients over HTTP, the processors
   and storage.
3. The ceiling: a plain pymongo unordered bulk upsert of the same final documents into the same
   server.
4. An incremental sync right after (nothing new) and one dispatch tick over 10,000 connections of
   which 100 are due, counting database commands.

The last line printed is one JSON object. Ratios, not absolute times, are what to compare: this
machine is shared.
"""

from __future__ import annotations

import json
import resource
import sys
import time

from pymongo import monitoring

from ingestion.benchmarks.harness import app_under_gunicorn

PLAID_TARGET = 20_000
HEALTH_DAYS = 90
DISPATCH_TOTAL, DISPATCH_DUE = 10_000, 100


class CommandCounter(monitoring.CommandListener):
    """Counts the commands this process sends to the database (pymongo command monitoring)."""

    def __init__(self) -> None:
        self.count = 0

    def started(self, event: object) -> None:
        self.count += 1

    def succeeded(self, event: object) -> None:
        pass

    def failed(self, event: object) -> None:
        pass


def main() -> int:
    counter = CommandCounter()
    monitoring.register(counter)  # before any client exists
    with app_under_gunicorn(
        database="bench",
        gunicorn_args=["--workers", "2"],
        env={"SIBLING_BACKFILL_DAYS": str(HEALTH_DAYS)},
    ):
        print(json.dumps(run(counter)))
    return 0


def _connections() -> list:
    from django.contrib.auth import get_user_model

    from sources.providers.fitbit import Fitbit
    from sources.providers.plaid import Plaid
    from sources.providers.plaid.sandbox import plaid_item_link
    from sources.sandbox.testing import google_credentials
    from sources.services import connection_upsert

    person = get_user_model().objects.create_user("bench", "bench@example.com")
    connections = []
    items = PLAID_TARGET // 380 + 1  # a sandbox bank holds about 400 transactions (182 days)
    for n in range(items):
        exchanged = plaid_item_link(client_user_id=str(person.pk))
        connections.append(
            connection_upsert(
                user=person,
                provider=Plaid,
                external_account_id=exchanged["item_id"],
                credentials=exchanged,
                account_label=f"Bank {n}",
            )
        )
    email = "bench.fitbit@example.com"
    credentials = google_credentials(Fitbit, email)
    connections.append(
        connection_upsert(
            user=person,
            provider=Fitbit,
            external_account_id="bench-health",
            credentials=credentials,
        )
    )
    return connections


def run(counter: CommandCounter) -> dict:
    from pymongo import UpdateOne

    from ingestion.http import RetryPolicy
    from ingestion.models import RawPage, SyncRun
    from ingestion.runner import connection_sync
    from ingestion.storage import RECORD_INDEXES, records_collection

    connections = _connections()
    policy = RetryPolicy(sleep=time.sleep)

    started = time.perf_counter()
    runs = [connection_sync(c.pk, policy=policy) for c in connections]
    pipeline_s = time.perf_counter() - started
    # The pipeline's peak, before this benchmark loads every document for the ceiling.
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    failed = [r for r in runs if r is None or r.outcome not in ("success", "partial")]
    if failed:
        raise RuntimeError(f"{len(failed)} syncs failed: {failed[0] and failed[0].error_message}")

    health_points = _health_points(RawPage)
    collections = {"external_data": None, "behavioral_data": None}
    documents = {name: list(records_collection(name).find({}, {"_id": 0})) for name in collections}
    records = sum(len(docs) for docs in documents.values())

    # The ceiling: the same final documents, one unordered bulk upsert per 500, into
    # collections with the same indexes on the same server.
    targets = {name: records_collection(f"bench_raw_{name}") for name in documents}
    for target in targets.values():
        for keys, options in RECORD_INDEXES:
            target.create_index(keys, **options)
    started = time.perf_counter()
    for name, docs in documents.items():
        target = targets[name]
        for i in range(0, len(docs), 500):
            target.bulk_write(
                [
                    UpdateOne(
                        {k: d[k] for k in ("user", "provider", "kind", "external_id")},
                        {"$set": d},
                        upsert=True,
                    )
                    for d in docs[i : i + 500]
                ],
                ordered=False,
            )
    raw_s = time.perf_counter() - started

    plaid, fitbit = connections[0], connections[-1]
    noop = [connection_sync(c.pk, policy=policy) for c in (plaid, fitbit)]
    noop_calls = sum(r.api_calls for r in noop)
    noop_streams = sum(len(c.provider_class.streams) for c in (plaid, fitbit))

    _, small_calls = _dispatch(counter, total=DISPATCH_TOTAL // 10)
    dispatch_ms, dispatch_calls = _dispatch(counter, total=DISPATCH_TOTAL)
    return {
        "records": records,
        "plaid_transactions": len(documents["external_data"]),
        "health_data_points": health_points,
        "pipeline_rps": round(records / pipeline_s, 1),
        "raw_rps": round(records / raw_s, 1),
        "ratio": round(raw_s / pipeline_s, 3),
        "peak_rss_mb": round(peak_rss_mb, 1),
        "api_calls": sum(r.api_calls for r in runs),
        "noop_sync_api_calls": noop_calls,
        "noop_sync_streams": noop_streams,
        "dispatch_10k_ms": dispatch_ms,
        "dispatch_10k_db_calls": dispatch_calls,
        "dispatch_1k_db_calls": small_calls,
        "sync_runs": SyncRun.objects.count(),
    }


def _health_points(raw_page_model: type) -> int:
    total = 0
    for page in raw_page_model.objects.filter(provider="fitbit").iterator():
        total += len(page.payload.get("dataPoints") or [])
    return total


def _dispatch(counter: CommandCounter, *, total: int) -> tuple[float, int]:
    from datetime import timedelta

    from django.utils import timezone

    from ingestion.scheduler import dispatch_due_syncs
    from sibling.mongo import plain_database
    from sources.models import UserDataSource

    collection = plain_database()[UserDataSource._meta.db_table]
    collection.delete_many({})
    user_id = plain_database()["auth_user"].find_one({}, {"_id": 1})["_id"]
    now = timezone.now()
    later, earlier = now + timedelta(hours=1), now - timedelta(minutes=5)
    documents = [
        {
            "user_id": user_id,
            "provider": "rescuetime",
            "external_account_id": f"bench-{n}",
            "status": "active",
            "next_sync_at": earlier if n < DISPATCH_DUE else later,
            "lease_owner": "",
            "lease_expires_at": None,
            "cursors": {},
            "granted_scopes": [],
            "sync_interval": 3600,
            "consecutive_failures": 0,
            "records_stored": 0,
            "sandbox": True,
            "last_error": "",
            "created_at": now,
            "updated_at": now,
        }
        for n in range(total)
    ]
    for i in range(0, len(documents), 1000):
        collection.insert_many(documents[i : i + 1000])
    # Enqueue into the real broker; nothing consumes it here.
    before = counter.count
    started = time.perf_counter()
    claimed = dispatch_due_syncs()
    elapsed_ms = (time.perf_counter() - started) * 1000
    if len(claimed) != DISPATCH_DUE:
        raise RuntimeError(f"dispatch claimed {len(claimed)} of {DISPATCH_DUE}")
    return round(elapsed_ms, 1), counter.count - before


if __name__ == "__main__":
    sys.exit(main())
