"""Task entry points for the workers; each calls a service."""

from bson import ObjectId

from ingestion.models import SyncRun
from ingestion.runner import connection_sync, connections_sync
from ingestion.scheduler import dispatch_due_syncs
from ingestion.webhooks import webhook_events_drain


def dispatch() -> int:
    return len(dispatch_due_syncs())


def sync_connection(connection_id: str, lease_owner: str = "", trigger: str = "schedule") -> str:
    run = connection_sync(ObjectId(connection_id), trigger=trigger, lease_owner=lease_owner)
    return run.outcome if run else "skipped"


def sync_connections(claims: list[list[str]], trigger: str = "schedule") -> list[str]:
    """A group of claimed syncs ([connection id, lease owner] pairs) run at once on this worker's
    threads (``SIBLING_SYNC_THREADS``); the outcome of each."""
    return connections_sync(
        [(ObjectId(connection_id), owner) for connection_id, owner in claims], trigger=trigger
    )


def fetch_windows(connection_id: str) -> str:
    """The days notifications queued on the connection; left queued if another sync holds it."""
    run = connection_sync(ObjectId(connection_id), trigger=SyncRun.Trigger.WEBHOOK, windows=True)
    return run.outcome if run else "nothing to fetch now"


def webhook_drain() -> int:
    return webhook_events_drain()
