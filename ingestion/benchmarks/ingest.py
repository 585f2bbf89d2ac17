"""`make bench`: the scheduled-ingestion pipeline against its ceiling, in one run.

1. Starts the embedded database (a throwaway SecantusDB) and the app with its provider sandbox
   under gunicorn.
2. Backfills >= 20,000 Plaid transactions (several sandbox banks) and >= 20,000 Google Health
   data points (one Fitbit account, 90 days) through the real clients over HTTP, the processors
   and storage.
3. The ceiling: a plain pymongo unordered bulk upsert of the same final documents into the same
   server.
4. An incremental sync right after (nothing new) and one dispatch tick over 10,000 connections of
   which 100 are due, counting database commands; the same over 100,000 connections.
5. How storing grows: pages stored through the store path into a record collection holding
   200,000 records and into an empty one, alternately.

The syncing process runs without DEBUG, as a worker does (the app under gunicorn keeps it, so that
the sandbox is served). The last line printed is one JSON object. Ratios, not absolute times, are
what to compare: this machine is shared.
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time
from typing import Any

from pymongo import monitoring

from ingestion.benchmarks.harness import app_under_gunicorn

PLAID_TARGET = 20_000
HEALTH_DAYS = 90
DISPATCH_TOTAL, DISPATCH_DUE = 10_000, 100
# Each dispatch figure is the median of this many ticks (the due connections released between):
# one tick is a few hundred milliseconds, and this machine is shared.
DISPATCH_TICKS = 5
# store_growth_ratio: records already in the full collection (spread over GROWTH_PEOPLE people),
# and the pages of GROWTH_PAGE records stored into each collection, alternately.
GROWTH_RECORDS, GROWTH_PEOPLE = 200_000, 100
GROWTH_PAGE, GROWTH_ROUNDS = 500, 10


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
    from django.conf import settings
    from pymongo import UpdateOne

    from ingestion.http import RetryPolicy
    from ingestion.models import RawPage, SyncRun
    from ingestion.runner import connection_sync
    from ingestion.storage import RECORD_INDEXES, records_collection

    # This process syncs as a production worker does. DEBUG (on in the harness, so that the
    # sandbox is served) makes Django's MongoDB backend copy and keep every operation it sends,
    # encrypted raw pages included, in its query log: work no worker does.
    settings.DEBUG = False
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
    dispatch_100k_ms, dispatch_100k_calls = _dispatch(counter, total=DISPATCH_TOTAL * 10)
    sync_runs = SyncRun.objects.count()
    growth = _store_growth(plaid, documents["external_data"])
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
        "dispatch_100k_ms": dispatch_100k_ms,
        "dispatch_100k_db_calls": dispatch_100k_calls,
        "sync_runs": sync_runs,
        **growth,
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
    times, calls = [], []
    for _tick in range(DISPATCH_TICKS):
        before = counter.count
        started = time.perf_counter()
        claimed = dispatch_due_syncs()
        times.append((time.perf_counter() - started) * 1000)
        calls.append(counter.count - before)
        if len(claimed) != DISPATCH_DUE:
            raise RuntimeError(f"dispatch claimed {len(claimed)} of {DISPATCH_DUE}")
        # Their syncs "ended" without moving the schedule: due again for the next tick.
        collection.update_many(
            {"lease_owner": {"$ne": ""}}, {"$set": {"lease_owner": "", "lease_expires_at": None}}
        )
    return round(statistics.median(times), 1), calls[0]


def _store_growth(connection: Any, sample: list[dict]) -> dict:
    """Pages of GROWTH_PAGE records stored through the store path (``page_store``: the erasure
    fence, one encryption per record, the bulk upserts) into a record collection that already
    holds GROWTH_RECORDS records and into an empty one, alternately (so both meet the same load
    on this shared machine), for a person of the benchmark. Both collections have the record
    indexes, and their records the size and shape of the Plaid transactions stored above."""
    from bson import ObjectId

    from ingestion.schemas import (
        FieldSpec,
        Kind,
        ProcessedPage,
        Record,
        category_register,
        kind_register,
    )
    from ingestion.storage import RECORD_INDEXES, page_store, record_decode, records_collection

    owner = connection.user_id
    data = [record_decode(d, owner_id=owner)["data"] for d in sample[:GROWTH_PAGE]]
    fields = {name: FieldSpec(object, nullable=True) for name in data[0]}
    kinds = {}
    for state in ("empty", "full"):
        category_register(f"growth_{state}", f"bench_growth_{state}")
        kinds[state] = kind_register(Kind(f"growth_{state}_record", f"growth_{state}", fields))
        target = records_collection(kinds[state].collection)
        target.drop()
        for keys, options in RECORD_INDEXES:
            target.create_index(keys, **options)

    # The full collection: GROWTH_RECORDS stored records of other people (sealed values copied
    # from real ones: the database sees the same sizes, and copying is faster than sealing).
    full = records_collection(kinds["full"].collection)
    people = [ObjectId() for _ in range(GROWTH_PEOPLE)]
    filling = time.perf_counter()
    batch = []
    for n in range(GROWTH_RECORDS):
        source = sample[n % len(sample)]
        batch.append(
            {
                **{k: v for k, v in source.items() if k not in ("user", "kind", "external_id")},
                "user": people[n % GROWTH_PEOPLE],
                "kind": kinds["full"].name,
                "external_id": f"filler-{n}",
            }
        )
        if len(batch) == 1000:
            full.insert_many(batch, ordered=False)
            batch = []
    if batch:
        full.insert_many(batch, ordered=False)
    fill_s = time.perf_counter() - filling

    # Seconds per page, by round: the ratio is the median of the rounds' ratios, so that a
    # moment when another process took the cores weighs as one round, not as the whole figure.
    elapsed: dict[str, list[float]] = {"empty": [], "full": []}
    for round_ in range(GROWTH_ROUNDS):
        # Alternate which goes first, so that neither always follows the other.
        for state in ("empty", "full") if round_ % 2 == 0 else ("full", "empty"):
            kind = kinds[state]
            records = [
                Record(kind.name, f"r{round_}-{i}", sample[i % len(sample)]["occurred_at"], item)
                for i, item in enumerate(data)
            ]
            started = time.perf_counter()
            page_store(
                connection=connection,
                stream="growth",
                processed=ProcessedPage(records=records),
            )
            elapsed[state].append(time.perf_counter() - started)
    stored = GROWTH_PAGE * GROWTH_ROUNDS
    if records_collection(kinds["full"].collection).count_documents({"user": owner}) != stored:
        raise RuntimeError("the growth pages were not all stored")
    ratios = [empty / full for empty, full in zip(elapsed["empty"], elapsed["full"], strict=True)]
    return {
        "store_empty_rps": round(GROWTH_PAGE / statistics.median(elapsed["empty"]), 1),
        "store_200k_rps": round(GROWTH_PAGE / statistics.median(elapsed["full"]), 1),
        "store_growth_ratio": round(statistics.median(ratios), 3),
        "store_growth_fill_s": round(fill_s, 1),
    }


if __name__ == "__main__":
    sys.exit(main())
