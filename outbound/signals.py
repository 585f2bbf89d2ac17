"""After migrate: the minutely send of change notifications (catches what a throttled kick
left behind, and retries that came due)."""

from typing import Any

from django.db.models.signals import post_migrate
from django.dispatch import receiver

SEND_SCHEDULE_NAME = "outbound-send"


@receiver(post_migrate, dispatch_uid="outbound.setup_after_migrate")
def setup_after_migrate(sender: Any, app_config: Any = None, **kwargs: Any) -> None:
    if app_config is None or app_config.label != "outbound":
        return
    from sibling.queue import schedule_ensure

    schedule_ensure(name=SEND_SCHEDULE_NAME, func="outbound.tasks.deliveries_send")
