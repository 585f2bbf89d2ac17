"""Subscribers and the deliveries owed to them.

An event is stored as one :class:`Delivery` per subscriber that wants it (an HTTPS endpoint
registered by staff, or an in-process handler registered in ``outbound.registry``), all written
with one insert when the event happens. The rows are the queue: workers send them in order per
person and subscriber, retry them with backoff, and keep the outcome for admin.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from sibling.fields import EncryptedField

SECRET_OWNER = "system:outbound"  # noqa: S105 (a key owner name, not a secret)

RECORDS_CHANGED = "records.changed"
CONNECTION_CREATED = "connection.created"
CONNECTION_REAUTH_REQUIRED = "connection.reauth_required"
CONNECTION_DISCONNECTED = "connection.disconnected"
PERSON_ERASED = "person.erased"
EVENT_TYPES = (
    RECORDS_CHANGED,
    CONNECTION_CREATED,
    CONNECTION_REAUTH_REQUIRED,
    CONNECTION_DISCONNECTED,
    PERSON_ERASED,
)


class Subscriber(models.Model):
    """An HTTPS endpoint that receives the events it asked for, signed with its own secret.

    The secret (``whsec_`` + base64 of 32 random bytes) is generated when the subscriber is
    added (or rotated), shown once to the staff member who did it, and stored encrypted under the
    system key ``system:outbound``; nobody can read it back from admin.
    """

    name = models.CharField(max_length=100, unique=True)
    url = models.URLField(max_length=2000, help_text="Where events are POSTed (https).")
    secret = EncryptedField(owner=SECRET_OWNER, null=True)
    # After a rotation, the secret before it: deliveries are signed with both until
    # previous_secret_until, so the endpoint can switch to the new one without losing any.
    previous_secret = EncryptedField(owner=SECRET_OWNER, null=True)
    previous_secret_until = models.DateTimeField(null=True, blank=True)
    event_types = models.JSONField(default=list, blank=True)
    # Record categories wanted (external, behavioral, volunteered); events that concern no
    # category (person.erased) go to every subscriber that wants their type.
    categories = models.JSONField(default=list, blank=True)
    active = models.BooleanField(default=True)
    paused_reason = models.CharField(max_length=300, blank=True, default="")
    paused_at = models.DateTimeField(null=True, blank=True)
    # Set by the first failure after a success; a subscriber failing for longer than
    # SIBLING_OUTBOUND_PAUSE_AFTER_S is paused.
    failing_since = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        permissions = [("pause_subscriber", "Can pause and resume subscribers")]

    def __str__(self) -> str:
        return self.name


class Delivery(models.Model):
    """One event owed to one subscriber (or in-process handler).

    ``target`` names the subscriber (``s:<id>``) or handler (``h:<name>``); deliveries of one
    person to one target go out in the order of ``(created_at, id)``, each waiting for the one
    before it to be delivered or exhausted. ``event_id`` (``msg_...``) is the same for every
    subscriber of one event and is sent as ``webhook-id``, so a receiver deduplicates by it.
    """

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed (will retry)"
        EXHAUSTED = "exhausted", "Exhausted (no more retries)"

    event_id = models.CharField(max_length=40)
    event_type = models.CharField(max_length=40)
    # The person's pseudonymous id (sibling.models.Person.public_id), never their account id.
    person = models.CharField(max_length=36, blank=True, default="")
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField()
    target = models.CharField(max_length=200)
    subscriber = models.ForeignKey(
        Subscriber, null=True, blank=True, on_delete=models.CASCADE, related_name="deliveries"
    )
    handler = models.CharField(max_length=200, blank=True, default="")
    state = models.CharField(max_length=12, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    # While a worker is sending it: when its claim lapses (claimed_until), so a killed worker's
    # delivery is found by the same indexed read as any other due one.
    next_attempt_at = models.DateTimeField()
    # The last moment a retry may be made (created_at + SIBLING_OUTBOUND_MAX_AGE_S; a replay
    # starts a new window).
    retry_until = models.DateTimeField()
    claimed_until = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    # A short status line ("HTTP 500", "ConnectTimeout", "refused: private address"); response
    # bodies are never kept.
    last_status = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=200, blank=True, default="")
    delivered_at = models.DateTimeField(null=True, blank=True)
    replayed_at = models.DateTimeField(null=True, blank=True)
    replays = models.PositiveIntegerField(default=0)
    # Set once delivered: a TTL index deletes the row SIBLING_OUTBOUND_RETENTION_DAYS later.
    # Failed and exhausted rows stay until they are delivered (a replay) or deleted by staff.
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "deliveries"
        permissions = [("replay_delivery", "Can replay change notifications")]
        constraints = [
            models.UniqueConstraint(fields=["target", "event_id"], name="outbound_delivery_once")
        ]
        indexes = [
            models.Index(fields=["state", "next_attempt_at"], name="outbound_delivery_due"),
            models.Index(
                fields=["target", "person", "state", "created_at"],
                name="outbound_delivery_order",
            ),
            models.Index(fields=["created_at"], name="outbound_delivery_created"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id} to {self.target}"
