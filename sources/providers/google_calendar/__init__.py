"""Google Calendar: every calendar in the person's list, its events synced incrementally, with
push notifications through watched channels."""
