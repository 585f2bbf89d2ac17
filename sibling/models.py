import uuid

from django.conf import settings
from django.db import models


class WorkerHeartbeat(models.Model):
    """The last time a worker of a cluster ran the heartbeat task (read by /healthz)."""

    cluster = models.CharField(max_length=100, unique=True)
    host = models.CharField(max_length=255)
    pid = models.IntegerField()
    beat_at = models.DateTimeField()

    class Meta:
        verbose_name = "worker heartbeat"

    def __str__(self) -> str:
        return f"{self.cluster} on {self.host} at {self.beat_at:%Y-%m-%d %H:%M:%S}"


def _public_id() -> str:
    return str(uuid.uuid4())


class Person(models.Model):
    """A person's own settings, and the pseudonymous id Sibling's other modules know them by.

    ``public_id`` is random and says nothing about the person: change notifications and service
    readers name people by it, never by their account id or address. ``people.person_of``
    makes the row the first time it is needed.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="person"
    )
    public_id = models.CharField(max_length=36, unique=True, default=_public_id, editable=False)
    # An IANA name ("Europe/Paris"); pages, charts, forms and exports show times in it.
    time_zone = models.CharField(max_length=64, default="UTC")
    # Emails about connections that need the person (sign-in needed, syncing stopped, a bank
    # about to stop sharing): one per incident, unless turned off.
    alert_emails = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"person {self.public_id}"
