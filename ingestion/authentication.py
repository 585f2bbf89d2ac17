"""API tokens: a person's own (Sibling's apps) and services' (Sibling's other modules), made,
revoked, and checked on each request.

A person's token is ``sib_`` and 43 URL-safe characters (256 random bits), a service token
``sibsvc_`` and 43. Only the SHA-256 digest is stored, so a request is authenticated by looking
the digest up: the comparison happens between digests, never between a stored secret and the one
presented, and a copy of the database holds no usable token.

Scopes: a person's token holds ``events:write`` (send events; every token made before scopes
existed holds exactly this) and/or ``records:read`` (read their own records); a service token
holds ``read:<category>`` for each category of records it may read.
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
from rest_framework import authentication, exceptions, permissions
from rest_framework.request import Request

from ingestion.models import ApiToken, ServiceToken
from sibling.lookups import object_or_404
from sibling.models import Person

TOKEN_PREFIX = "sib_"  # noqa: S105 (a public marker, not a secret)
SERVICE_TOKEN_PREFIX = "sibsvc_"  # noqa: S105 (a public marker, not a secret)
API_TOKEN_SCOPES = frozenset(ApiToken.Scope.values)
SERVICE_TOKEN_SCOPES = frozenset(ServiceToken.Scope.values)
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


def api_token_create(
    *, user: AbstractBaseUser, name: str, scopes: list[str] | None = None
) -> NewApiToken:
    """A new token of the person's; ``scopes`` defaults to ``events:write`` alone."""
    scopes = sorted(set(scopes if scopes is not None else [ApiToken.Scope.EVENTS_WRITE]))
    unknown = set(scopes) - API_TOKEN_SCOPES
    if unknown or not scopes:
        raise ValueError(f"a token needs one or more of {sorted(API_TOKEN_SCOPES)}")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user,
        name=name.strip()[:100],
        digest=token_digest(secret),
        prefix=secret[:8],
        scopes=scopes,
    )
    return NewApiToken(token=token, secret=secret)


def api_tokens_of(*, user: AbstractBaseUser) -> list[ApiToken]:
    return list(ApiToken.objects.filter(user=user).order_by("-created_at"))


def api_token_get(*, user: AbstractBaseUser, token_id: str) -> ApiToken:
    """The person's own token, or 404: another person's id looks like a missing one."""
    return object_or_404(ApiToken.objects.filter(user=user), token_id, what="token")


def api_token_revoke(*, token: ApiToken) -> None:
    _token_revoke(token)


def api_token_authenticate(secret: str) -> ApiToken | None:
    """The active token with this secret (its last use noted), or None."""
    token = _token_find(ApiToken, secret, related="user")
    if token is None or not token.user.is_active:
        return None
    _last_use_note(token)
    return token


def _token_find(model: type[Any], secret: str, *, related: str) -> Any | None:
    """The unrevoked token of ``model`` (ApiToken or ServiceToken) with this secret, or None."""
    if not secret or len(secret) > MAX_TOKEN_LENGTH:
        return None
    digest = token_digest(secret)
    token = model.objects.filter(digest=digest).select_related(related).first()
    if token is None or not hmac.compare_digest(token.digest, digest):
        return None
    return token if token.revoked_at is None else None


def _last_use_note(token: ApiToken | ServiceToken) -> None:
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        # A conditional update: concurrent requests write it once per minute at most.
        type(token).objects.filter(pk=token.pk).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lte=now - LAST_USED_RESOLUTION)
        ).update(last_used_at=now)
        token.last_used_at = now


def _token_revoke(token: ApiToken | ServiceToken) -> None:
    # Only the first revocation counts: the date shown is when it stopped working.
    type(token).objects.filter(pk=token.pk, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    token.refresh_from_db(fields=["revoked_at"])


@dataclass
class NewServiceToken:
    token: ServiceToken
    secret: str  # shown to staff once, never stored


def service_token_create(
    *,
    name: str,
    scopes: list[str],
    person: Person | None = None,
    created_by: AbstractBaseUser | None = None,
) -> NewServiceToken:
    """A new service token (staff, in admin). ``scopes``: one or more ``read:<category>``."""
    scopes = sorted(set(scopes))
    if not scopes or set(scopes) - SERVICE_TOKEN_SCOPES:
        raise ValueError(f"a service token needs one or more of {sorted(SERVICE_TOKEN_SCOPES)}")
    token = ServiceToken(
        name=name.strip()[:100], scopes=scopes, person=person, created_by=created_by
    )
    secret = service_token_secret_set(token)
    token.save()
    return NewServiceToken(token=token, secret=secret)


def service_token_secret_set(token: ServiceToken) -> str:
    """Give an unsaved token a new secret (its digest and prefix); the secret is returned to be
    shown once, and kept nowhere."""
    secret = SERVICE_TOKEN_PREFIX + secrets.token_urlsafe(32)
    token.digest = token_digest(secret)
    token.prefix = secret[:12]
    return secret


def service_token_revoke(*, token: ServiceToken) -> None:
    _token_revoke(token)


def service_token_authenticate(secret: str) -> ServiceToken | None:
    """The active service token with this secret (its last use noted), or None."""
    token = _token_find(ServiceToken, secret, related="person")
    if token is not None:
        _last_use_note(token)
    return token


class ServiceCaller:
    """``request.user`` for a request made with a service token: authenticated, nobody's
    account. What it may read comes from ``request.auth`` (the ServiceToken)."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False
    pk = None
    id = None

    def __init__(self, token: ServiceToken) -> None:
        self.token = token

    def __str__(self) -> str:
        return f"service {self.token.name}"

    def has_perm(self, perm: str, obj: object = None) -> bool:
        return False


def _bearer(request: Request) -> str | None:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return secret.strip()


class ApiTokenAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer <token>`` with a person's API token."""

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[AbstractBaseUser, ApiToken] | None:
        secret = _bearer(request)
        if secret is None:
            return None  # no credentials: DRF answers 401 with the challenge below
        token = api_token_authenticate(secret)
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked token.")
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        return f'{self.keyword} realm="api"'


class ReadTokenAuthentication(ApiTokenAuthentication):
    """The records API: a person's API token or a service token (told apart by the prefix)."""

    def authenticate(
        self, request: Request
    ) -> tuple[AbstractBaseUser | ServiceCaller, ApiToken | ServiceToken] | None:
        secret = _bearer(request)
        if secret is None:
            return None
        if secret.startswith(SERVICE_TOKEN_PREFIX):
            service = service_token_authenticate(secret)
            if service is None:
                raise exceptions.AuthenticationFailed("Invalid or revoked token.")
            return ServiceCaller(service), service
        return super().authenticate(request)


class HasTokenScope(permissions.BasePermission):
    """The request's token holds the view's ``required_scope`` (a person's token) or, for a
    service token, one ``read:`` scope at least (categories are checked per record)."""

    message = "This token does not have the scope this needs."

    def has_permission(self, request: Request, view: Any) -> bool:
        token = request.auth
        if isinstance(token, ServiceToken):
            return bool(getattr(view, "service_allowed", False) and token.categories)
        if isinstance(token, ApiToken):
            return getattr(view, "required_scope", None) in (token.scopes or ())
        return False


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


class ReadTokenScheme(OpenApiAuthenticationExtension):
    """How the OpenAPI schema describes ReadTokenAuthentication."""

    target_class = "ingestion.authentication.ReadTokenAuthentication"
    name = "readTokenAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": (
                "A personal API token with the records:read scope (sib_..., from Settings, API "
                "tokens), or a service token (sibsvc_..., made by staff in admin) with "
                "read:external, read:behavioral and/or read:volunteered."
            ),
        }
