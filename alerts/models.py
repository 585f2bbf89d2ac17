from __future__ import annotations

from django.conf import settings
from django.db import models

from sources.models import ProviderField, ProviderMixin, UserDataSource
from sources.signals import EXPIRING, REAUTH_REQUIRED, STOPPED


class Incident(ProviderMixin, models.Model):
    """One time a connection needed its person: it opened when the connection needed sign-in
    again, stopped after repeated failures or got its provider's expiry notice, and closes when
    the connection is active again (a reconnect, a successful sync) or is disconnected.

    ``key`` is what makes one email per incident hold across workers and retries: while the
    incident is open it is ``open:<connection>:<kind>``, unique, so a second signal for the same
    incident cannot open another; closing rewrites it to a value of its own, so the next
    incident of that kind can open. The email is claimed (``email_state``) before it is sent.
    Nothing here is personal beyond whose connection it is: no label, no token, no value.
    """

    class Kind(models.TextChoices):
        REAUTH_REQUIRED = REAUTH_REQUIRED, "Sign-in needed"
        STOPPED = STOPPED, "Syncing stopped"
        EXPIRING = EXPIRING, "Sharing ends soon"

    class EmailState(models.TextChoices):
        PENDING = "pending", "Waiting to be sent"
        SENDING = "sending", "Being sent"
        SENT = "sent", "Sent"
        SKIPPED = "skipped", "Not sent"
        FAILED = "failed", "Failed"

    class Closed(models.TextChoices):
        RECONNECTED = "reconnected", "Reconnected"
        SYNCED = "synced", "Synced again"
        DISCONNECTED = "disconnected", "Disconnected"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="alert_incidents"
    )
    connection = models.ForeignKey(
        UserDataSource, on_delete=models.CASCADE, related_name="alert_incidents"
    )
    provider = ProviderField()
    kind = models.CharField(max_length=20, choices=Kind.choices)
    key = models.CharField(max_length=120)
    opened_at = models.DateTimeField()
    closed_at = models.DateTimeField(null=True, blank=True)
    closed_by = models.CharField(max_length=20, choices=Closed.choices, blank=True)
    email_state = models.CharField(
        max_length=10, choices=EmailState.choices, default=EmailState.PENDING
    )
    # Why no email went out (turned off, no address, resolved first), or the last send error's
    # class: never an address or a server's answer.
    email_note = models.CharField(max_length=100, blank=True)
    email_attempts = models.PositiveIntegerField(default=0)
    # A claimed email belongs to its sender until then; a sender that died loses it after.
    email_claimed_until = models.DateTimeField(null=True, blank=True)
    email_next_attempt_at = models.DateTimeField(null=True, blank=True)
    emailed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["key"], name="alert_incident_key")]
        indexes = [
            models.Index(fields=["email_state", "email_next_attempt_at"], name="alert_email_due"),
        ]
        verbose_name = "connection alert"
        ordering = ["-opened_at"]

    def __str__(self) -> str:
        return f"{self.kind} alert {self.pk}"

    @property
    def is_open(self) -> bool:
        return self.closed_at is None


def incident_open_key(connection_id: object, kind: str) -> str:
    return f"open:{connection_id}:{kind}"
