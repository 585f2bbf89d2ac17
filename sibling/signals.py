from typing import Any

from django.db.models.signals import post_migrate
from django.dispatch import receiver


@receiver(post_migrate, dispatch_uid="sibling.setup_after_migrate")
def setup_after_migrate(sender: Any, app_config: Any = None, **kwargs: Any) -> None:
    if app_config is None or app_config.label != "sibling":
        return
    from sibling.encryption import key_vault_ensure_index
    from sibling.services import worker_heartbeat_schedule_ensure

    key_vault_ensure_index()
    worker_heartbeat_schedule_ensure()
