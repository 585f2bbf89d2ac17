from django.dispatch import Signal

# Sent when a connection's data must be erased; receivers (the ingestion app) delete what they
# hold for it and return how many records they deleted. Arguments: connection.
connection_data_erase = Signal()

# Sent when a connection has become due now (connected, resumed, "Sync now"); the ingestion app
# starts its sync at once instead of at the next dispatch. Arguments: connection, trigger.
connection_due = Signal()
