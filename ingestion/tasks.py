"""Task entry points for the workers; each calls a service."""

from bson import ObjectId

from ingestion.runner import connection_sync
from ingestion.scheduler import dispatch_due_syncs
from ingestion.webhooks import webhook_events_drain


def dispatch() -> int:
    return len(dispatch_due_syncs())


def sync_connection(connection_id: str, lease_owner: str = "", trigger: str = "schedule") -> str:
    run = connection_sync(ObjectId(connection_id), trigger=trigger, lease_owner=lease_owner)
    return run.outcome if run else "skipped"


def webhook_drain() -> int:
    return webhook_events_drain()
