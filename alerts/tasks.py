"""django-q2 tasks: alert emails are sent by workers, never inside a sync or a request."""

from __future__ import annotations

from django_q.tasks import async_task

from alerts import services
from sibling.queue import broker, schedule_ensure

SCHEDULE_NAME = "alerts-email-due"
SCHEDULE_MINUTES = 5


def incident_email_enqueue(*, incident_id: object) -> None:
    async_task(
        "alerts.tasks.incident_email",
        str(incident_id),
        task_name=f"alert-{incident_id}",
        broker=broker(),
    )


def incident_email(incident_id: str) -> str:
    return services.incident_email_send(incident_id=_object_id(incident_id))


def incidents_email_due() -> int:
    """Every few minutes: the emails whose send failed and is due again, or whose task was
    lost, each given a task of its own (a mail server that hangs holds up one task, not the
    sweep). Each email is claimed before it is sent, so a task enqueued twice sends it once."""
    due = services.incidents_email_due()
    for incident_id in due:
        incident_email_enqueue(incident_id=incident_id)
    return len(due)


def schedule_ensure_alerts() -> None:
    schedule_ensure(
        name=SCHEDULE_NAME, func="alerts.tasks.incidents_email_due", minutes=SCHEDULE_MINUTES
    )


def _object_id(value: str) -> object:
    from bson import ObjectId

    return ObjectId(value) if ObjectId.is_valid(value) else value
