from typing import Any

from django.dispatch import receiver
from django_q.tasks import async_task

from sibling.queue import broker
from sources.models import UserDataSource
from sources.signals import connection_due


@receiver(connection_due, sender=UserDataSource, dispatch_uid="gmail.watch_on_connect")
def watch_on_connect(sender: Any, connection: UserDataSource, trigger: str, **kwargs: Any) -> None:
    """A newly connected mailbox is watched at once, not at the next daily renewal."""
    from django.conf import settings

    if connection.provider == "gmail" and trigger == "backfill" and settings.SIBLING_SYNC_ON_DUE:
        async_task(
            "sources.providers.gmail.tasks.watch_renew_one", str(connection.pk), broker=broker()
        )
