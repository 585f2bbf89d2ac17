"""State of the provider sandbox: what a real provider keeps on its side.

Tokens are stored in plain text on purpose: this is a fake provider for development and tests,
never reachable with DEBUG off. Single-use values (authorization codes, public tokens) are spent
with a conditional update (`filter(..., used=False).update(used=True)`), because this backend has
no transactions.
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


class PlaidLinkToken(models.Model):
    """A Link token; `item_id` is set in update mode (created with an access_token)."""

    link_token = models.CharField(max_length=128, unique=True)
    client_id = models.CharField(max_length=200)
    client_user_id = models.CharField(max_length=200)
    client_name = models.CharField(max_length=200)
    products = models.JSONField(default=list)
    # Kept so a later sandbox feature can send Plaid webhooks to it.
    webhook = models.TextField(blank=True, default="")
    item_id = models.CharField(max_length=64, blank=True, default="")
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField()

    def __str__(self) -> str:
        return self.link_token


class PlaidItem(models.Model):
    """A linked institution login. Created when Link succeeds, usable once exchanged."""

    item_id = models.CharField(max_length=64, unique=True)
    access_token = models.CharField(max_length=128, unique=True)
    client_id = models.CharField(max_length=200)
    client_user_id = models.CharField(max_length=200, blank=True, default="")
    institution_id = models.CharField(max_length=64)
    institution_name = models.CharField(max_length=200)
    products = models.JSONField(default=list)
    webhook = models.TextField(blank=True, default="")
    exchanged = models.BooleanField(default=False)
    login_required = models.BooleanField(default=False)
    removed = models.BooleanField(default=False)
    created_at = models.DateTimeField()

    def __str__(self) -> str:
        return self.item_id


class PlaidPublicToken(models.Model):
    """A public token from Link (30 minutes, single use), exchanged for the item's access token."""

    public_token = models.CharField(max_length=128, unique=True)
    item_id = models.CharField(max_length=64)
    expires_at = models.DateTimeField()
    used = models.BooleanField(default=False)

    def __str__(self) -> str:
        return self.public_token


class ActivityTick(models.Model):
    """One step of simulated new activity (new, changed and removed records) for an account."""

    provider = models.CharField(max_length=20)
    account = models.CharField(max_length=320)
    seq = models.PositiveIntegerField()
    at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "account", "seq"], name="sandbox_tick_unique"
            )
        ]
        ordering = ["provider", "account", "seq"]

    def __str__(self) -> str:
        return f"{self.provider}:{self.account}#{self.seq}"


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
    """Key material generated once per purpose (e.g. the Plaid webhook verification key).

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


class GmailWatch(models.Model):
    """A mailbox's `users.watch`: where Gmail would publish, and where the sandbox pushes.

    Gmail itself only knows the topic; the push endpoint and audience belong to the Pub/Sub
    subscription. Blank means the sandbox's default receiver (from SIBLING_PUBLIC_URL, read at
    send time).
    """

    email = models.CharField(max_length=320, unique=True)
    topic_name = models.CharField(max_length=300)
    label_ids = models.JSONField(default=list)
    push_endpoint = models.TextField(blank=True, default="")
    audience = models.TextField(blank=True, default="")
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"watch {self.email} -> {self.topic_name}"
