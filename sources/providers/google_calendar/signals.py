"""Push channels follow the connection: opened when it connects, stopped when it disconnects."""

from typing import Any

from django.dispatch import receiver
from django_q.tasks import async_task

from sibling.queue import broker
from sources.models import UserDataSource
from sources.providers.google_calendar.provider import GoogleCalendar
from sources.signals import connection_disconnecting, connection_due


@receiver(connection_due, sender=UserDataSource, dispatch_uid="google_calendar.watch_on_connect")
def watch_on_connect(sender: Any, connection: UserDataSource, trigger: str, **kwargs: Any) -> None:
    """A newly connected account's calendars are watched at once, not at the next renewal."""
    from django.conf import settings

    if (
        connection.provider == GoogleCalendar.id
        and trigger == "backfill"
        and settings.SIBLING_SYNC_ON_DUE
    ):
        async_task(
            "sources.providers.google_calendar.tasks.channels_watch_one",
            str(connection.pk),
            broker=broker(),
        )


@receiver(
    connection_disconnecting, sender=UserDataSource, dispatch_uid="google_calendar.stop_channels"
)
def stop_on_disconnect(sender: Any, connection: UserDataSource, **kwargs: Any) -> None:
    """Stop the channels while the tokens still work (they are revoked next)."""
    if connection.provider == GoogleCalendar.id:
        from sources.providers.google_calendar.tasks import channels_stop_all

        channels_stop_all(connection)
