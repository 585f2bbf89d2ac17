"""Per-person API tokens for Sibling's own apps: made, revoked, and checked on each request.

A token is ``sib_`` and 43 URL-safe characters (256 random bits). Only its SHA-256 digest is
stored, so a request is authenticated by looking the digest up: the comparison happens between
digests, never between a stored secret and the one presented, and a copy of the database holds no
usable token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.db.models import Q
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from ingestion.models import ApiToken
from sibling.lookups import object_or_404

TOKEN_PREFIX = "sib_"  # noqa: S105 (a public marker, not a secret)
# Writing last_used_at on every request would turn each API call into two writes.
LAST_USED_RESOLUTION = timedelta(minutes=1)
# Longer than any token this module makes; bounds the work for junk headers.
MAX_TOKEN_LENGTH = 200


@dataclass
class NewApiToken:
    token: ApiToken
    secret: str  # shown to the person once, never stored


def token_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def api_token_create(*, user: AbstractBaseUser, name: str) -> NewApiToken:
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user, name=name.strip()[:100], digest=token_digest(secret), prefix=secret[:8]
    )
    return NewApiToken(token=token, secret=secret)


def api_tokens_of(*, user: AbstractBaseUser) -> list[ApiToken]:
    return list(ApiToken.objects.filter(user=user).order_by("-created_at"))


def api_token_get(*, user: AbstractBaseUser, token_id: str) -> ApiToken:
    """The person's own token, or 404: another person's id looks like a missing one."""
    return object_or_404(ApiToken.objects.filter(user=user), token_id, what="token")


def api_token_revoke(*, token: ApiToken) -> None:
    # Only the first revocation counts: the date shown is when it stopped working.
    ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    token.refresh_from_db(fields=["revoked_at"])


def api_token_authenticate(secret: str) -> ApiToken | None:
    """The active token with this secret (its last use noted), or None."""
    if not secret or len(secret) > MAX_TOKEN_LENGTH:
        return None
    digest = token_digest(secret)
    token = ApiToken.objects.filter(digest=digest).select_related("user").first()
    if token is None or not hmac.compare_digest(token.digest, digest):
        return None
    if token.revoked_at is not None or not token.user.is_active:
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        # A conditional update: concurrent requests write it once per minute at most.
        ApiToken.objects.filter(pk=token.pk).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lte=now - LAST_USED_RESOLUTION)
        ).update(last_used_at=now)
        token.last_used_at = now
    return token


class ApiTokenAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer <token>`` with a person's API token."""

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[AbstractBaseUser, ApiToken] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != self.keyword.lower():
            return None  # no credentials: DRF answers 401 with the challenge below
        token = api_token_authenticate(secret.strip())
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked token.")
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        return f'{self.keyword} realm="api"'


class ApiTokenScheme(OpenApiAuthenticationExtension):
    """How the OpenAPI schema describes ApiTokenAuthentication."""

    target_class = "ingestion.authentication.ApiTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A personal API token from Settings, API tokens (sib_...).",
        }
