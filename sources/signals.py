import logging

from django.dispatch import Signal

logger = logging.getLogger(__name__)

# Sent when a connection's data must be erased; receivers (the ingestion app) delete what they
# hold for it and return how many records they deleted. Arguments: connection.
connection_data_erase = Signal()

# Sent when a connection has become due now (connected, resumed, "Sync now"); the ingestion app
# starts its sync at once instead of at the next dispatch. Arguments: connection, trigger.
connection_due = Signal()

# Sent when a connection is about to be disconnected, while its credentials still work (before
# the grant is revoked and they are forgotten): a provider whose account holds something Sibling
# opened (a push channel, a subscription) closes it here. Sent robustly: a receiver's failure
# never stops the disconnect. Arguments: connection.
connection_disconnecting = Signal()

# Sent after a connection changed in a way its person, and Sibling's other modules, care about.
# Arguments: connection (as it is now), change: one of CONNECTION_CHANGES. Receivers (change
# notifications, the alerts people get by email) must not raise: it is sent robustly, after the
# change is stored, and a receiver's failure never undoes or stops it.
connection_changed = Signal()

CREATED = "created"  # connected, or connected again after a disconnect
REAUTH_REQUIRED = "reauth_required"  # the provider refused its grant: the person must sign in
STOPPED = "stopped"  # syncing failed SIBLING_SYNC_MAX_FAILURES times in a row and has stopped
EXPIRING = "expiring"  # the provider will stop sharing soon unless the person acts
DISCONNECTED = "disconnected"  # the person (or the provider) ended the connection
CONNECTION_CHANGES = (CREATED, REAUTH_REQUIRED, STOPPED, EXPIRING, DISCONNECTED)


def connection_changed_send(connection: object, change: str) -> None:
    """Tell connection_changed's receivers; a failing receiver is logged, never raised."""
    if change not in CONNECTION_CHANGES:
        raise ValueError(f"unknown connection change {change!r}")
    for receiver, result in connection_changed.send_robust(
        sender=type(connection), connection=connection, change=change
    ):
        if isinstance(result, Exception):
            logger.error(
                "connection_changed receiver %s failed: %s",
                getattr(receiver, "__qualname__", receiver),
                type(result).__name__,
            )
