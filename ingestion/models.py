from typing import Any

from django.conf import settings
from django.db import models

from sibling.fields import EncryptedField
from sources.models import UserDataSource


class SyncRun(models.Model):
    """One sync of one connection: what triggered it, what it did, how it ended."""

    class Trigger(models.TextChoices):
        SCHEDULE = "schedule", "Schedule"
        WEBHOOK = "webhook", "Webhook"
        MANUAL = "manual", "Manual"
        BACKFILL = "backfill", "Backfill"

    class Outcome(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCESS = "success", "Success"
        PARTIAL = "partial", "Partial"
        DEFERRED = "deferred", "Deferred"
        FAILED = "failed", "Failed"

    connection = models.ForeignKey(UserDataSource, on_delete=models.CASCADE, related_name="runs")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    provider = models.CharField(max_length=40)
    trigger = models.CharField(max_length=20, choices=Trigger.choices)
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=20, choices=Outcome.choices, default=Outcome.RUNNING)
    fetched = models.PositiveIntegerField(default=0)
    created = models.PositiveIntegerField(default=0)
    updated = models.PositiveIntegerField(default=0)
    deleted = models.PositiveIntegerField(default=0)
    quarantined = models.PositiveIntegerField(default=0)
    api_calls = models.PositiveIntegerField(default=0)
    rate_limited = models.PositiveIntegerField(default=0, help_text="429s and quota errors seen.")
    pages = models.PositiveIntegerField(default=0)
    error_class = models.CharField(max_length=100, blank=True)
    error_message = models.CharField(max_length=500, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["connection", "-started_at"], name="run_connection_started"),
            models.Index(
                fields=["provider", "outcome", "-started_at"], name="run_provider_outcome"
            ),
        ]
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"{self.provider} {self.trigger} run {self.pk} ({self.outcome})"

    @property
    def duration_s(self) -> float | None:
        if self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()


class RawPage(models.Model):
    """A provider page as received, encrypted, kept for a while so it can be reprocessed."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    connection = models.ForeignKey(UserDataSource, on_delete=models.CASCADE)
    provider = models.CharField(max_length=40)
    stream = models.CharField(max_length=40)
    run = models.ForeignKey(SyncRun, null=True, on_delete=models.SET_NULL)
    payload = EncryptedField()
    fetched_at = models.DateTimeField()
    expires_at = models.DateTimeField(help_text="A TTL index deletes the page after this.")

    class Meta:
        indexes = [
            models.Index(fields=["user", "provider", "fetched_at"], name="raw_user_provider"),
            models.Index(fields=["provider", "fetched_at"], name="raw_provider_fetched"),
        ]

    def __str__(self) -> str:
        return f"{self.provider}/{self.stream} page {self.pk}"


class QuarantinedItem(models.Model):
    """An item a processor refused, with the reason; the item itself is encrypted."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    connection = models.ForeignKey(UserDataSource, null=True, on_delete=models.CASCADE)
    provider = models.CharField(max_length=40)
    stream = models.CharField(max_length=40)
    kind = models.CharField(max_length=40, blank=True)
    reason = models.CharField(max_length=300)
    item = EncryptedField(null=True)
    run = models.ForeignKey(SyncRun, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(fields=["user", "provider", "created_at"], name="quarantine_user"),
            models.Index(fields=["provider", "created_at"], name="quarantine_provider"),
        ]

    def __str__(self) -> str:
        return f"{self.provider}: {self.reason}"


class WebhookPayloadField(EncryptedField):
    """A webhook payload, encrypted under its person's key when the row names one (``user``),
    else under ``system:webhooks`` (a provider's delivery, whose person is found later)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("owner", "system:webhooks")
        super().__init__(*args, **kwargs)

    def owner_id(self, instance: models.Model) -> Any:
        user_id = getattr(instance, "user_id", None)
        return user_id if user_id is not None else super().owner_id(instance)


class WebhookEvent(models.Model):
    """One delivery from a provider (or Sibling's own apps): stored first, answered at once,
    processed by a task. A redelivery of the same event (same dedup key) only counts another
    delivery on the first one; it has no second effect.
    """

    class Status(models.TextChoices):
        ACCEPTED = "accepted", "Accepted"
        DUPLICATE = "duplicate", "Duplicate"
        REJECTED = "rejected", "Rejected"
        PROCESSING = "processing", "Processing"
        PROCESSED = "processed", "Processed"
        FAILED = "failed", "Failed"

    provider = models.CharField(max_length=40)
    dedup_key = models.CharField(max_length=128)
    event_type = models.CharField(max_length=100, blank=True)
    received_at = models.DateTimeField()
    verified = models.BooleanField(default=False)
    status = models.CharField(max_length=20, choices=Status.choices)
    deliveries = models.PositiveIntegerField(default=1)
    attempts = models.PositiveIntegerField(default=0)
    error = models.CharField(max_length=300, blank=True)
    # Who it concerns, once processing has found out.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE
    )
    connection = models.ForeignKey(UserDataSource, null=True, blank=True, on_delete=models.SET_NULL)
    # Under the person's data key when the person is known at receipt (the events API), so an
    # erasure destroys it; otherwise under the webhooks' own key.
    payload = WebhookPayloadField(null=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    # Set when processed: a TTL index deletes the event after SIBLING_WEBHOOK_RETENTION_DAYS.
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["provider", "dedup_key"], name="webhook_dedup")
        ]
        indexes = [
            # Few indexes: every delivery pays for each one before it is answered.
            models.Index(fields=["status", "received_at"], name="webhook_queue"),
        ]
        permissions = [
            ("view_webhook_payload", "Can see decrypted webhook payloads"),
            ("replay_webhookevent", "Can replay webhook events"),
        ]

    def __str__(self) -> str:
        return f"{self.provider} {self.event_type or 'event'} {self.pk} ({self.status})"


class WebhookRejection(models.Model):
    """Refused deliveries, counted: one row per provider, reason, sender address and hour.

    Forged traffic must cost little, so a refusal is one atomic upsert (``$inc``) into a bounded
    row, never a stored event; the row keeps a few recent examples without bodies (header names,
    body length, time) and expires (TTL index) SIBLING_WEBHOOK_REJECTION_LOG_DAYS after its hour.
    Written through pymongo by ``ingestion.webhooks.webhook_rejection_record``.
    """

    provider = models.CharField(max_length=40)
    reason = models.CharField(max_length=100)
    sender = models.CharField(max_length=64, help_text="The address (IPv6: its /64) it came from.")
    bucket = models.DateTimeField(help_text="The hour counted.")
    count = models.PositiveIntegerField(default=0)
    first_at = models.DateTimeField()
    last_at = models.DateTimeField()
    examples = models.JSONField(default=list, blank=True)
    expires_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "reason", "sender", "bucket"], name="webhook_rejection_key"
            )
        ]
        indexes = [models.Index(fields=["-bucket"], name="webhook_rejection_time")]
        ordering = ["-bucket", "-last_at"]

    def __str__(self) -> str:
        return f"{self.provider}: {self.reason} x{self.count} from {self.sender}"


def api_token_scopes_default() -> list[str]:
    # Tokens made before scopes existed could only send events: they keep exactly that.
    return ["events:write"]


class ApiToken(models.Model):
    """A person's token for Sibling's own apps (the events API, the records API).

    Only the SHA-256 digest is stored: the token is shown once when it is made, and a database
    read does not hand out working tokens. The prefix lets people tell their tokens apart.
    ``scopes`` says what it may do: ``events:write`` (send events), ``records:read`` (read the
    person's own records and connections).
    """

    class Scope(models.TextChoices):
        EVENTS_WRITE = "events:write", "Send events (moods, notes, sleep, screen time)"
        RECORDS_READ = "records:read", "Read my records and connections"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    digest = models.CharField(max_length=64)
    prefix = models.CharField(max_length=8)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    scopes = models.JSONField(default=api_token_scopes_default, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["digest"], name="api_token_digest")]
        indexes = [models.Index(fields=["user", "-created_at"], name="api_token_user")]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    def scope_labels(self) -> list[str]:
        labels = dict(self.Scope.choices)
        return [labels.get(scope, scope) for scope in self.scopes or ()]


class ServiceToken(models.Model):
    """A token for one of Sibling's other modules (a service), made by staff in admin.

    It reads records of the categories its scopes name (``read:external``, ``read:behavioral``,
    ``read:volunteered``), of one person when ``person`` is set, else of any person the request
    names. Only the SHA-256 digest is stored; the secret is shown once, when it is made. Every
    read is counted in the person's access ledger (``ingestion.ledger.service_read_record``).
    """

    class Scope(models.TextChoices):
        READ_EXTERNAL = "read:external", "Read external records (email, bank, calendar)"
        READ_BEHAVIORAL = "read:behavioral", "Read behavioral records (activity, sleep, ...)"
        READ_VOLUNTEERED = "read:volunteered", "Read volunteered records (moods, notes, ...)"

    name = models.CharField(max_length=100, help_text="The module that uses it, as people see.")
    digest = models.CharField(max_length=64, editable=False)
    prefix = models.CharField(max_length=12, editable=False)
    scopes = models.JSONField(default=list)
    person = models.ForeignKey(
        "sibling.Person",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="service_tokens",
        help_text="Only this person's records; empty: any person the request names.",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="service_tokens_made",
        editable=False,
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["digest"], name="service_token_digest")]
        indexes = [models.Index(fields=["-created_at"], name="service_token_created")]
        permissions = [("revoke_servicetoken", "Can revoke service tokens")]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    @property
    def categories(self) -> list[str]:
        """The record categories its scopes allow, e.g. ``["external"]``."""
        return [scope.split(":", 1)[1] for scope in self.scopes or () if scope.startswith("read:")]


class ErasureRecord(models.Model):
    """That an erasure happened, and how much it removed; nothing about whom.

    ``subject`` is a keyed hash of the person's id: it lets staff confirm a given erasure request
    was carried out without the record naming anyone. The record is written before anything is
    deleted (``completed`` false): it is the fence that stops the person's running syncs and
    event batches and refuses them a new data key (``ingestion.fence``).
    """

    subject = models.CharField(max_length=64, db_index=True)
    erased_at = models.DateTimeField()
    counts = models.JSONField(default=dict)
    revoke_failures = models.JSONField(default=list)
    key_destroyed = models.BooleanField(default=False)
    completed = models.BooleanField(
        default=True, help_text="False from the moment the erasure begins until it has finished."
    )

    def __str__(self) -> str:
        return f"erasure {self.pk} at {self.erased_at:%Y-%m-%d %H:%M}"


class AccessLedgerEntry(models.Model):
    """Each time someone sees a person's decrypted data, exports it or replays their events:
    who, what, when and why. The person reads their own ledger."""

    class Action(models.TextChoices):
        VIEW = "view", "Viewed decrypted data"
        EXPORT = "export", "Exported data"
        REPLAY = "replay", "Replayed events"
        SERVICE_READ = "service_read", "Read by a Sibling service"

    subject = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="ledger_entries",
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        on_delete=models.SET_NULL,
        related_name="ledger_actions",
    )
    actor_is_staff = models.BooleanField(default=False)
    action = models.CharField(max_length=20, choices=Action.choices)
    scope = models.CharField(max_length=200)
    reason = models.CharField(max_length=500)
    created_at = models.DateTimeField(auto_now_add=True)
    # Service reads (SERVICE_READ) are batched: one entry per token, person and hour (``bucket``),
    # counting the records read per category in ``counts`` ({"external": 12, ...}) and the
    # requests in ``counts["requests"]``; ``last_at`` is the latest read. A partial unique index
    # (migration 0013) on (subject, service, bucket) for these entries makes the upsert atomic.
    service = models.ForeignKey(
        "ServiceToken",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="ledger_entries",
    )
    bucket = models.DateTimeField(null=True, blank=True)
    counts = models.JSONField(default=dict, blank=True)
    last_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["subject", "-created_at"], name="ledger_subject")]
        verbose_name_plural = "access ledger entries"
        # Admin's privacy views (a person's page, data requests) check these.
        permissions = [
            ("view_person_privacy", "Can see a person's privacy page (connections, ledger)"),
            ("export_person_data", "Can export a person's decrypted data"),
            ("erase_person", "Can erase a person (staff accounts: superusers only)"),
        ]

    def __str__(self) -> str:
        return f"{self.get_action_display()} ({self.scope}) at {self.created_at:%Y-%m-%d %H:%M}"

    @property
    def reads_text(self) -> str:
        """A service read in words: "12 external records and 3 behavioral records"."""
        parts = [
            f"{n} {category} record{'' if n == 1 else 's'}"
            for category, n in sorted((self.counts or {}).items())
            if category not in ("requests", "connections") and n
        ]
        if (self.counts or {}).get("connections"):
            parts.append("the list of connections")
        return " and ".join(parts) if parts else "nothing"


class BudgetBucket(models.Model):
    """One token bucket of a provider's budget (``ingestion.budgets``): per connected account
    or for the whole application, shared by every thread, process and host.

    ``ingestion.budgets`` changes it only by compare-and-set on ``version``; the counters are
    what the Sync health dashboard shows. ``key`` hashes the account or client id, which
    never appears here in clear.
    """

    key = models.CharField(max_length=200, unique=True)
    provider = models.CharField(max_length=50)
    budget = models.CharField(max_length=50)
    per = models.CharField(max_length=10)
    # The level at ``stamp`` (epoch seconds): negative while calls wait for reserved units.
    # Aligned buckets: the level in the window that starts at ``stamp``.
    tokens = models.FloatField(default=0.0)
    stamp = models.FloatField(default=0.0)
    capacity = models.FloatField(default=0.0)
    # No call before this (epoch seconds): the provider said to wait (Retry-After).
    blocked_until = models.FloatField(default=0.0)
    version = models.BigIntegerField(default=0)
    units = models.BigIntegerField(default=0)
    waits = models.BigIntegerField(default=0)
    wait_s = models.FloatField(default=0.0)
    deferrals = models.BigIntegerField(default=0)
    rate_limited = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["provider", "budget"], name="budget_provider_name")]

    def __str__(self) -> str:
        return f"{self.provider}.{self.budget} ({self.per})"
