"""`make bench-webhooks`: signed Plaid webhooks against the app under gunicorn, and the ceiling.

1. Starts the embedded database (throwaway) and the app under gunicorn, links a sandbox bank.
2. From a separate process, sends 2,000 correctly signed Plaid webhooks (10% of them exact
   redeliveries) at concurrency 16, then the same load against a trivial endpoint of the same
   server (the ceiling).
3. Processes what was stored and counts: every unique event stored once, no redelivery with an
   effect, nothing lost.

The last line printed is one JSON object.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ingestion.benchmarks.harness import app_under_gunicorn

TOTAL, REDELIVERED, CONCURRENCY = 2000, 200, 16

SENDER = r"""
import json, statistics, sys, time
from concurrent.futures import ThreadPoolExecutor
import requests
requests_file, url, concurrency = sys.argv[1], sys.argv[2], int(sys.argv[3])
deliveries = json.load(open(requests_file))
sessions = {}
def send(item):
    import threading
    session = sessions.setdefault(threading.get_ident(), requests.Session())
    started = time.perf_counter()
    response = session.post(url, data=item["body"].encode(), headers=item["headers"], timeout=30)
    return response.status_code, (time.perf_counter() - started) * 1000
started = time.perf_counter()
with ThreadPoolExecutor(concurrency) as pool:
    results = list(pool.map(send, deliveries))
elapsed = time.perf_counter() - started
latencies = sorted(ms for _, ms in results)
print(json.dumps({
    "sent": len(results),
    "ok": sum(1 for status, _ in results if 200 <= status < 300),
    "statuses": sorted({status for status, _ in results}),
    "rps": len(results) / elapsed,
    "p50_ms": latencies[len(latencies) // 2],
    "p99_ms": latencies[int(len(latencies) * 0.99) - 1],
}))
"""


def main() -> int:
    with app_under_gunicorn(
        database="bench_webhooks",
        # More threads than the load's concurrency: verification fetches Plaid's key from the
        # sandbox, which this same server serves.
        gunicorn_args=["--workers", "2", "--threads", "16"],
        env={"SIBLING_SANDBOX_SEND_WEBHOOKS": "0"},
    ) as base:
        print(json.dumps(run(base)))
    return 0


def _send(deliveries: list[dict], url: str, tmp: Path) -> dict:
    requests_file = tmp / "deliveries.json"
    requests_file.write_text(json.dumps(deliveries))
    result = subprocess.run(
        [sys.executable, "-c", SENDER, str(requests_file), url, str(CONCURRENCY)],
        capture_output=True,
        text=True,
    )
    if result.returncode:
        raise RuntimeError(f"the load generator failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run(base: str) -> dict:
    import tempfile

    from django.contrib.auth import get_user_model

    from ingestion.models import WebhookEvent
    from ingestion.webhooks import webhook_events_drain
    from sources.providers.plaid import Plaid
    from sources.providers.plaid.sandbox import plaid_item_link
    from sources.providers.plaid.sandbox.webhooks import (
        plaid_verification_header,
        plaid_webhook_body,
    )
    from sources.services import connection_upsert

    person = get_user_model().objects.create_user("bench", "bench@example.com")
    item = plaid_item_link(client_user_id=str(person.pk))
    connection_upsert(
        user=person, provider=Plaid, external_account_id=item["item_id"], credentials=item
    )
    unique = []
    for n in range(TOTAL - REDELIVERED):
        # Identical bodies signed in the same second are one event (the dedup key is the
        # verified iat and body hash), so each event here differs by one field.
        body = json.dumps(
            plaid_webhook_body(
                item["item_id"], "TRANSACTIONS", "SYNC_UPDATES_AVAILABLE", bench_sequence=n
            )
        )
        unique.append(
            {
                "body": body,
                "headers": {
                    "Content-Type": "application/json",
                    "Plaid-Verification": plaid_verification_header(body.encode()),
                },
            }
        )
    # Redeliveries are exact copies, spread through the load.
    deliveries = list(unique)
    for n in range(REDELIVERED):
        deliveries.insert(n * 10 + 5, unique[n * 7 % len(unique)])

    with tempfile.TemporaryDirectory() as tmp:
        load = _send(deliveries, f"{base}/webhooks/plaid/", Path(tmp))
        ceiling = _send(deliveries, f"{base}/webhooks/noop/", Path(tmp))

    events = WebhookEvent.objects.filter(provider="plaid")
    stored = events.count()
    webhook_events_drain(limit=TOTAL * 2)
    processed = events.filter(status=WebhookEvent.Status.PROCESSED).count()
    deliveries_counted = sum(events.values_list("deliveries", flat=True))
    return {
        "sent": load["sent"],
        "accepted": load["ok"],
        "stored_unique": stored,
        "processed": processed,
        "duplicates_effect": stored - len(unique),
        "lost": len(unique)
        - stored
        + (TOTAL - deliveries_counted if deliveries_counted < TOTAL else 0),
        "rps": round(load["rps"], 1),
        "ceiling_rps": round(ceiling["rps"], 1),
        "ratio": round(load["rps"] / ceiling["rps"], 3),
        "p50_ms": round(load["p50_ms"], 1),
        "p99_ms": round(load["p99_ms"], 1),
        "statuses": load["statuses"],
    }


if __name__ == "__main__":
    sys.exit(main())
