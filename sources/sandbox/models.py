"""State of the provider sandbox: what a real provider keeps on its side.

The shared machinery has its own models: Google's OAuth server (one account, code, grant and
token store serves every Google provider), pending faults and signing keys. Everything a single
provider's imitation keeps (its items, tokens, watches, activity steps) is a `SandboxRecord` in
the generic per-account store (sources.sandbox.store), so a new imitation needs no model and no
migration.

Tokens are stored in plain text on purpose: this is a fake provider for development and tests,
never reachable with DEBUG off. Single-use values (authorization codes, one-time tokens) are spent
with a conditional update (`filter(..., used=False).update(used=True)`, or an expiry moved to
now), because this backend has no transactions.
"""

from __future__ import annotations

from django.db import models


class GoogleAccount(models.Model):
    """A Google identity the sandbox has seen; `created_at` anchors its synthetic mailbox."""

    email = models.CharField(max_length=320, unique=True)
    created_at = models.DateTimeField()

    def __str__(self) -> str:
        return self.email


class GoogleAuthCode(models.Model):
    """An authorization code issued by the consent page (10 minutes, single use)."""

    code = models.CharField(max_length=128, unique=True)
    client_id = models.CharField(max_length=200)
    redirect_uri = models.TextField()
    email = models.CharField(max_length=320)
    scopes = models.JSONField(default=list)
    offline = models.BooleanField(default=False)
    code_challenge = models.CharField(max_length=200, blank=True, default="")
    code_challenge_method = models.CharField(max_length=10, blank=True, default="")
    expires_at = models.DateTimeField()
    used = models.BooleanField(default=False)

    def __str__(self) -> str:
        return f"code for {self.email}"


class GoogleGrant(models.Model):
    """One consent: a refresh token (returned only for access_type=offline) and its scopes."""

    refresh_token = models.CharField(max_length=128, unique=True)
    client_id = models.CharField(max_length=200)
    email = models.CharField(max_length=320, db_index=True)
    scopes = models.JSONField(default=list)
    offline = models.BooleanField(default=False)
    revoked = models.BooleanField(default=False)
    created_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"grant for {self.email}"


class GoogleAccessToken(models.Model):
    """A one-hour bearer token issued from a grant."""

    token = models.CharField(max_length=128, unique=True)
    grant = models.ForeignKey(GoogleGrant, on_delete=models.CASCADE, related_name="access_tokens")
    email = models.CharField(max_length=320, db_index=True)
    scopes = models.JSONField(default=list)
    expires_at = models.DateTimeField()
    revoked = models.BooleanField(default=False)

    def __str__(self) -> str:
        return f"access token for {self.email}"


class Fault(models.Model):
    """A pending fault for one account; counted faults are consumed one call at a time."""

    provider = models.CharField(max_length=20)
    account = models.CharField(max_length=320)
    fault = models.CharField(max_length=40)
    remaining = models.PositiveIntegerField(default=1)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "account", "fault"], name="sandbox_fault_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.provider}:{self.account}:{self.fault} x{self.remaining}"


class SigningKey(models.Model):
    """Key material generated once per purpose (e.g. a provider's webhook signing key).

    `purpose` names the current key. A rotated key keeps its kid but moves to the purpose
    `<purpose>:expired:<kid>` with `expired_at` set, so the current key stays unique per purpose
    while verifiers can still fetch the old one and see that it expired.
    """

    purpose = models.CharField(max_length=120, unique=True)
    kid = models.CharField(max_length=64, unique=True)
    private_pem = models.TextField()
    created_at = models.DateTimeField()
    expired_at = models.DateTimeField(null=True, blank=True, default=None)

    def __str__(self) -> str:
        return f"{self.purpose} ({self.kid})"


class SandboxRecord(models.Model):
    """One piece of a provider imitation's state, for one account.

    `provider` is the imitation's namespace (a provider id, or a family such as "google" whose
    providers share accounts), `kind` what the record is ("item", "watch", "tick", ...), `key`
    its unique name within (provider, kind): a token, an id, an email. `account` is whose it
    is (the account faults address), for listing an account's records. `data` holds the rest.

    Lookups filter on the indexed fields only (`key`, or `account` with `kind`) and read `data`
    in Python: the embedded development server answers JSON key lookups unreliably.
    """

    provider = models.CharField(max_length=40)
    account = models.CharField(max_length=320, blank=True, default="")
    kind = models.CharField(max_length=40)
    key = models.CharField(max_length=400)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField()
    # Null: does not expire. A one-time value is spent by moving its expiry to now. A TTL index
    # deletes a record a day after it expired (migration 0004), so a long run does not pile up.
    expires_at = models.DateTimeField(null=True, blank=True, default=None)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "kind", "key"], name="sandbox_record_unique"
            )
        ]
        indexes = [
            models.Index(fields=["provider", "account", "kind"], name="sandbox_record_account")
        ]

    def __str__(self) -> str:
        return f"{self.provider}:{self.kind}:{self.key[:24]}"


class QuotaSlot(models.Model):
    """The units charged to one quota key (sources.sandbox.quotas), by time slot.

    The id is `<provider>|<quota>|<key digest>`; `slots` maps a slot number to its units and is
    charged with `$inc` (atomic, shared by every process answering as the sandbox). A TTL index
    drops the document once no window reaches its newest slot.
    """

    id = models.CharField(primary_key=True, max_length=200, db_column="_id")
    slots = models.JSONField(default=dict)
    expires_at = models.DateTimeField()

    def __str__(self) -> str:
        return self.id


class ReceivedNotification(models.Model):
    """One POST to the sandbox's change-notification receiver (sources.sandbox.receiver), as a
    subscriber of Sibling's events would see it: kept whether or not it verified."""

    endpoint = models.CharField(max_length=100)
    webhook_id = models.CharField(max_length=200, blank=True, default="")
    event_type = models.CharField(max_length=60, blank=True, default="")
    # Verified with the endpoint's secret by the standardwebhooks library.
    verified = models.BooleanField(default=False)
    # A verified delivery whose webhook-id was received (and verified) before: no second effect.
    duplicate = models.BooleanField(default=False)
    answered = models.PositiveIntegerField()
    error = models.CharField(max_length=200, blank=True, default="")
    body = models.JSONField(null=True, blank=True, default=None)
    received_at = models.DateTimeField()

    class Meta:
        indexes = [
            models.Index(fields=["endpoint", "webhook_id"], name="sandbox_received_id"),
        ]

    def __str__(self) -> str:
        return f"{self.endpoint}: {self.webhook_id or '?'} ({self.answered})"
