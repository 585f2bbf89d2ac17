from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone
from django.utils.crypto import salted_hmac

from sibling.fields import EncryptedField
from sources.providers import PROVIDERS, ProviderNotFound, get_provider
from sources.providers.base import Provider


def provider_validate(value: str) -> None:
    """A provider field holds the id of a registered provider (there are no choices: a new
    provider needs no migration)."""
    if value not in PROVIDERS:
        raise ValidationError(
            "Unknown provider %(value)s: not in the provider registry.",
            code="unknown_provider",
            params={"value": str(value)[:40]},
        )


class ProviderField(models.CharField):
    """The id of a registered provider, validated against the registry."""

    default_validators = [provider_validate]

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("max_length", 40)
        super().__init__(*args, **kwargs)


class ProviderMixin:
    """``get_provider_display()`` (the provider's name) for a model with a ``provider`` field,
    as Django gives a field with choices."""

    provider: str

    def get_provider_display(self) -> str:
        try:
            return get_provider(self.provider).name
        except ProviderNotFound:
            return self.provider


class UserDataSource(ProviderMixin, models.Model):
    """One person's connection to one account at one provider.

    Credentials (tokens, an API key, a linked account's access token) are encrypted with the
    person's data key; ``last_error`` is written for people and staff and never holds a secret.
    """

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        PAUSED = "paused", "Paused"
        REAUTH_REQUIRED = "reauth_required", "Sign-in needed"
        ERROR = "error", "Error"
        DISCONNECTED = "disconnected", "Disconnected"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="data_sources"
    )
    provider = ProviderField()
    external_account_id = models.CharField(max_length=255)
    # What the person recognises the account by (an address, a bank's name): personal data.
    account_label = EncryptedField(null=True)
    sandbox = models.BooleanField(default=False)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.ACTIVE)
    credentials = EncryptedField(null=True)
    granted_scopes = models.JSONField(default=list, blank=True)
    cursors = models.JSONField(default=dict, blank=True)
    sync_interval = models.PositiveIntegerField(default=3600, help_text="Seconds between syncs.")
    # How far back the first sync reaches, as the person chose it (0: everything the provider
    # keeps; empty: SIBLING_BACKFILL_DAYS within the provider's maximum).
    backfill_days = models.PositiveIntegerField(
        null=True, blank=True, help_text="Days of history the first sync fetches."
    )
    next_sync_at = models.DateTimeField(null=True, blank=True, db_index=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    # Something the person should act on soon (a bank consent about to expire), not an error.
    notice = models.CharField(max_length=300, blank=True)
    # A keyed hash of the account's address, so a notification that names only the address
    # (a mailbox's push, say) finds its connection without storing the address in the clear.
    external_lookup = models.CharField(max_length=64, blank=True, db_index=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    records_stored = models.PositiveIntegerField(default=0)
    backfill_progress = models.FloatField(
        null=True, blank=True, help_text="0 to 1 while the first sync backfills; null after."
    )
    disconnected_at = models.DateTimeField(null=True, blank=True)
    # Who may sync now (an atomic claim by the dispatcher) and who may refresh the tokens now.
    lease_owner = models.CharField(max_length=64, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    refresh_lock_until = models.DateTimeField(null=True, blank=True)
    # Days that providers' notifications named and no sync has fetched yet, merged per stream
    # ({stream: {"first": "YYYY-MM-DD", "last": "YYYY-MM-DD", "asked": notifications}}): kept
    # here, not only in a task, so a window asked for while another sync holds the lease, or
    # lost with a killed worker, is fetched after it rather than dropped.
    pending_windows = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "provider", "external_account_id"],
                name="one_connection_per_account",
            )
        ]
        indexes = [
            models.Index(fields=["user", "provider"], name="source_user_provider"),
            models.Index(
                fields=["provider", "external_account_id"], name="source_external_account"
            ),
            models.Index(fields=["status", "next_sync_at"], name="source_due"),
        ]
        verbose_name = "connection"
        # What admin actions need beyond seeing connections (changing a connection's fields is
        # the ordinary change permission).
        permissions = [
            ("sync_userdatasource", "Can sync, pause, resume and resync connections"),
            ("disconnect_userdatasource", "Can disconnect connections"),
        ]

    def __str__(self) -> str:
        return f"{self.provider} connection {self.pk}"

    @staticmethod
    def lookup_key(address: str) -> str:
        return salted_hmac(
            "sibling.connection-lookup", address.strip().lower(), algorithm="sha256"
        ).hexdigest()

    @property
    def provider_class(self) -> type[Provider]:
        return get_provider(self.provider)

    @property
    def is_connected(self) -> bool:
        return self.status != self.Status.DISCONNECTED

    @property
    def backfill_days_in_force(self) -> int:
        """The history window of this connection's first sync, in days (BACKFILL_EVERYTHING:
        all the provider keeps): the person's choice, else the default."""
        if self.backfill_days is None:
            return self.provider_class.backfill_days_default()
        return self.backfill_days

    @property
    def history_fetched(self) -> bool:
        """Whether a sync has stored anything yet (a page's cursor, a success): from then on the
        history window is settled."""
        return bool(self.cursors) or self.last_success_at is not None

    def leased(self, now: datetime | None = None) -> bool:
        """Whether a sync holds this connection (a lease not yet expired: a killed worker's
        counts only until then)."""
        return self.lease_expires_at is not None and self.lease_expires_at > (now or timezone.now())

    def history_choosable(self, now: datetime | None = None) -> bool:
        """Whether the person may still choose how far back the first sync reaches: nothing
        fetched yet, no sync under way (it read the window when it started), still connected,
        and a provider that does not fix it when the account is linked."""
        return not (
            self.provider_class.backfill_fixed_at_connect
            or self.history_fetched
            or self.status == self.Status.DISCONNECTED
            or self.leased(now)
        )


class PendingRevocation(ProviderMixin, models.Model):
    """A grant Sibling let go of but the provider has not confirmed withdrawn yet.

    The connection's own credentials are forgotten at once; this row keeps only the token that
    ends the grant, encrypted with the person's data key, until a retry is confirmed (the row is
    deleted) or the attempts run out (it stays, "gave up", for the person and staff to see).
    ``last_error`` is the error's class or the provider's code, never a token.
    """

    class State(models.TextChoices):
        PENDING = "pending", "Retrying"
        GAVE_UP = "gave_up", "Gave up"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="pending_revocations"
    )
    # Kept when the connection is deleted with its data: the grant outlives it at the provider.
    connection = models.ForeignKey(
        UserDataSource,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="pending_revocations",
    )
    provider = ProviderField()
    token = EncryptedField()
    token_type_hint = models.CharField(max_length=20)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(fields=["state", "next_attempt_at"], name="revocation_due"),
        ]

    def __str__(self) -> str:
        return f"{self.provider} revocation {self.pk}"

    @property
    def provider_class(self) -> type[Provider]:
        return get_provider(self.provider)
