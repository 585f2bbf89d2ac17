from django.dispatch import Signal

# Sent when a connection's data must be erased; receivers (the ingestion app) delete what they
# hold for it and return how many records they deleted. Arguments: connection.
connection_data_erase = Signal()
