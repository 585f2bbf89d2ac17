"""Task entry points for the workers; each calls a service."""

from outbound.delivery import deliveries_send as _deliveries_send


def deliveries_send() -> int:
    """Send the change notifications that are due (kicked after events, and every minute)."""
    return _deliveries_send()
