"""Push channels follow the connection: opened when it connects, kept when it reconnects,
stopped when it disconnects."""

from typing import Any

from django.db.models.signals import pre_save
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


@receiver(pre_save, sender=UserDataSource, dispatch_uid="google_calendar.keep_channels")
def channels_kept_on_reconnect(
    sender: Any, instance: UserDataSource, update_fields: Any = None, **kwargs: Any
) -> None:
    """A reconnect replaces the credentials with the new grant's. The channels opened for the
    same account stay live at Google (and the new tokens can stop them: same person, same OAuth
    client), so they are carried over instead of forgotten while they still deliver."""
    credentials = instance.credentials
    if (
        instance.provider != GoogleCalendar.id
        or instance.pk is None
        or not credentials
        or "channels" in credentials
        or (update_fields is not None and "credentials" not in update_fields)
    ):
        return
    from sources.providers.google_calendar.tasks import channels_stored

    if channels := channels_stored(instance.pk):
        instance.credentials = {**credentials, "channels": channels}
