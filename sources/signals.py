from django.dispatch import Signal

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
