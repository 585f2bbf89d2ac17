from typing import Any

from django.db.models.signals import post_migrate
from django.dispatch import receiver

from sources.models import UserDataSource
from sources.signals import connection_data_erase, connection_due


@receiver(post_migrate, dispatch_uid="ingestion.setup_after_migrate")
def setup_after_migrate(sender: Any, app_config: Any = None, **kwargs: Any) -> None:
    if app_config is None or app_config.label != "ingestion":
        return
    from ingestion.scheduler import dispatch_schedule_ensure
    from ingestion.storage import indexes_ensure
    from sibling.queue import schedule_ensure
    from sources.providers import PROVIDERS

    indexes_ensure()
    dispatch_schedule_ensure()
    # Safety net for the throttled drain requests of ingestion.webhooks.
    schedule_ensure(name="webhook-drain", func="ingestion.tasks.webhook_drain")
    # Each provider's declared periodic work (a push watch's renewal, say).
    for provider in PROVIDERS.values():
        for work in provider.periodic:
            schedule_ensure(name=work.name, func=work.func, minutes=work.minutes)
    from sources import tasks as source_tasks

    schedule_ensure(
        name=source_tasks.SCHEDULE_NAME,
        func="sources.tasks.revocations_retry",
        minutes=source_tasks.SCHEDULE_MINUTES,
    )


@receiver(connection_data_erase, sender=UserDataSource, dispatch_uid="ingestion.erase")
def connection_data_erase_records(sender: Any, connection: UserDataSource, **kwargs: Any) -> int:
    from ingestion.storage import connection_records_delete

    return connection_records_delete(connection=connection)


@receiver(connection_due, sender=UserDataSource, dispatch_uid="ingestion.sync_now")
def connection_due_sync(
    sender: Any, connection: UserDataSource, trigger: str, **kwargs: Any
) -> None:
    from django.conf import settings

    from ingestion.scheduler import connection_sync_enqueue

    if settings.SIBLING_SYNC_ON_DUE:
        connection_sync_enqueue(connection_id=connection.pk, trigger=trigger)
