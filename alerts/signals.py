"""connection_changed's receiver: incidents open and close here; emails go through a task."""

from __future__ import annotations

import logging
from typing import Any

from django.db.models.signals import post_migrate
from django.dispatch import receiver

from alerts.models import Incident
from sources.signals import (
    CREATED,
    DISCONNECTED,
    EXPIRING,
    REAUTH_REQUIRED,
    STOPPED,
    connection_changed,
)

logger = logging.getLogger(__name__)
OPENS = (REAUTH_REQUIRED, STOPPED, EXPIRING)
CLOSES = {CREATED: Incident.Closed.RECONNECTED, DISCONNECTED: Incident.Closed.DISCONNECTED}


@receiver(connection_changed, dispatch_uid="alerts.connection_changed")
def connection_changed_alert(sender: Any, connection: Any, change: str, **kwargs: Any) -> None:
    """Quick: a few single-document writes and, for a new incident, one task enqueued."""
    from alerts import services, tasks

    if change in CLOSES:
        services.incidents_close(connection_id=connection.pk, closed_by=CLOSES[change])
    elif change in OPENS:
        incident = services.incident_open(connection=connection, kind=change)
        if incident is not None:
            tasks.incident_email_enqueue(incident_id=incident.pk)


@receiver(post_migrate, dispatch_uid="alerts.setup_after_migrate")
def setup_after_migrate(sender: Any, app_config: Any = None, **kwargs: Any) -> None:
    if app_config is None or app_config.label != "alerts":
        return
    from alerts.tasks import schedule_ensure_alerts

    schedule_ensure_alerts()
