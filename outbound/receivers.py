"""Connection changes become change notifications (``connection.*`` events)."""

from typing import Any

from django.dispatch import receiver

from outbound.emit import connection_event_emit
from sources.signals import connection_changed


@receiver(connection_changed, dispatch_uid="outbound.connection_changed")
def connection_changed_notify(sender: Any, connection: Any, change: str, **kwargs: Any) -> None:
    # One insert at most (emission never calls the network); sent robustly by the sender.
    connection_event_emit(connection=connection, change=change)
