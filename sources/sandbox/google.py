"""Google's OAuth 2.0 server, imitated: consent page, token, revoke, userinfo, and the keys that
sign Google's ID tokens.

One sandbox serves every Google client in settings.SIBLING_SANDBOX_CLIENTS (one per Google
provider). Behaviour follows https://developers.google.com/identity/protocols/oauth2/web-server:
codes live 10 minutes and are single use, access tokens 3599 s, a refresh token only for
access_type=offline and never rotated on refresh, revocation of either token ends the grant.

`google_caller()` is the bearer check every Google API imitation runs first. This module is also
the Google family's fault module (see sources.sandbox.registry): `expire_access_token` and
`revoke` act on the account's tokens and grants, whichever Google provider they were issued to.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from . import registry
from .common import (
    RETRY_AFTER_SECONDS,
    basic_credentials,
    bearer_token,
    client_secret_of,
    error_page,
    json_response,
    random_token,
    redirect_valid,
    stable_int,
    url_with_query,
)
from .faults import fault_take, faults_pending
from .keys import private_key_of, signing_key_stored
from .models import GoogleAccessToken, GoogleAccount, GoogleAuthCode, GoogleGrant
from .quotas import QuotaCaller

CODE_LIFETIME = timedelta(minutes=10)
ACCESS_TOKEN_SECONDS = 3599
DEFAULT_EMAIL = "sandbox.person@example.com"
EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

_SCOPE_WORDS = {
    "openid": "Associate you with your personal info on Google",
    "email": "See your primary Google Account email address",
    "profile": "See your personal info, including any personal info you've made publicly available",
    "https://www.googleapis.com/auth/userinfo.email": (
        "See your primary Google Account email address"
    ),
    "https://www.googleapis.com/auth/userinfo.profile": (
        "See your personal info, including any personal info you've made publicly available"
    ),
}


# The scopes Google always grants (its consent screen has no box to untick them), and how its
# token response writes them: the short OpenID Connect names come back as the full URLs.
# https://developers.google.com/identity/protocols/oauth2/resources/granular-permissions
BASIC_SCOPES = frozenset(
    {
        "openid",
        "email",
        "profile",
        "https://www.googleapis.com/auth/userinfo.email",
        "https://www.googleapis.com/auth/userinfo.profile",
    }
)
_SCOPE_EXPANSION = {
    "email": "https://www.googleapis.com/auth/userinfo.email",
    "profile": "https://www.googleapis.com/auth/userinfo.profile",
}


def scopes_expand(scopes: list[str]) -> list[str]:
    """Scopes as Google's token response writes them (`email` becomes `.../userinfo.email`)."""
    expanded: list[str] = []
    for scope in scopes:
        full = _SCOPE_EXPANSION.get(scope, scope)
        if full not in expanded:
            expanded.append(full)
    return expanded


def _all_scope_words() -> dict[str, str]:
    words = dict(_SCOPE_WORDS)
    for module in registry.namespace_modules("google"):
        words.update(getattr(module, "scope_words", {}))
    return words


def scope_describe(scope: str) -> str:
    """A scope in plain words, as Google's consent screen shows it (each Google provider's
    imitation describes its own scopes in `scope_words`)."""
    words = _all_scope_words()
    return words.get(scope) or words.get(scope.removesuffix(".readonly")) or scope


# --- Error shapes -----------------------------------------------------------------------------


def oauth_error(error: str, description: str | None = None, status: int = 400) -> HttpResponse:
    """The token/revoke endpoints' flat error: {"error", "error_description"}."""
    body = {"error": error}
    if description is not None:
        body["error_description"] = description
    return json_response(body, status=status)


def invalid_grant() -> HttpResponse:
    # Google answers this one message for used, expired, revoked and unknown codes and tokens.
    return oauth_error("invalid_grant", "Token has been expired or revoked.")


def api_error(
    code: int,
    message: str,
    status: str,
    *,
    reason: str,
    domain: str = "global",
    details: list[dict] | None = None,
    headers: dict[str, str] | None = None,
    extra: dict | None = None,
) -> HttpResponse:
    """Google's API error envelope: {"error": {code, message, errors[], status, details?}}."""
    entry = {"message": message, "domain": domain, "reason": reason, **(extra or {})}
    if entry["message"] is None:
        del entry["message"]
    error: dict = {"code": code, "message": message, "errors": [entry], "status": status}
    if details:
        error["details"] = details
    return json_response({"error": error}, status=code, headers=headers)


def error_info(reason: str, service: str, domain: str = "googleapis.com") -> dict:
    return {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": domain,
        "metadata": {"service": service},
    }


def unauthenticated() -> HttpResponse:
    # The 401 Invalid Credentials body Google's API guides document.
    return api_error(
        401,
        "Invalid Credentials",
        "UNAUTHENTICATED",
        reason="authError",
        # The documented body, whose `errors` entry carries no message of its own.
        extra={"message": None, "locationType": "header", "location": "Authorization"},
        headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'},
    )


def insufficient_scope(service: str) -> HttpResponse:
    return api_error(
        403,
        "Request had insufficient authentication scopes.",
        "PERMISSION_DENIED",
        reason="insufficientPermissions",
        details=[error_info("ACCESS_TOKEN_SCOPE_INSUFFICIENT", service)],
    )


def rate_limited(service: str, *, retry_after: bool = True) -> HttpResponse:
    """429 RESOURCE_EXHAUSTED. Google documents no `Retry-After` on it: the quota answers
    (sources.sandbox.quotas) send none; the `rate_limit` fault keeps one to test clients that
    honour it."""
    return api_error(
        429,
        "Resource has been exhausted (e.g. check quota).",
        "RESOURCE_EXHAUSTED",
        reason="rateLimitExceeded",
        domain="usageLimits",
        details=[error_info("RATE_LIMIT_EXCEEDED", service)],
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)} if retry_after else None,
    )


def user_rate_limited(message: str = "User Rate Limit Exceeded") -> HttpResponse:
    """403 `userRateLimitExceeded`: a Google API's per-user quota is spent."""
    return api_error(
        403, message, "PERMISSION_DENIED", reason="userRateLimitExceeded", domain="usageLimits"
    )


def backend_error(service: str, status: int = 500) -> HttpResponse:
    """A Google API's 5xx: most answer 500 backendError, some 503 UNAVAILABLE."""
    if status == 503:
        return api_error(
            503, "The service is currently unavailable.", "UNAVAILABLE", reason="backendError"
        )
    return api_error(500, "Backend Error", "INTERNAL", reason="backendError")


# --- Accounts and the Google family's faults ---------------------------------------------------

# `refresh_token_expired`: the 7-day refresh-token lifetime of an app whose consent screen is
# in "Testing" publishing status has run out (refresh answers invalid_grant);
# `userinfo_unverified`: userinfo leaves out `email_verified` (optional in OpenID Connect).
fault_names = ("expire_access_token", "refresh_token_expired", "userinfo_unverified")


def google_account_ensure(email: str) -> GoogleAccount:
    """The Google account of `email`, created (with its `created_at` anchor) on first sight."""
    account, _ = GoogleAccount.objects.get_or_create(
        email=email.lower(), defaults={"created_at": timezone.now()}
    )
    return account


def fault_apply(account: str, fault: str, count: int) -> bool:
    """`expire_access_token`: every current access token of the account expires now.
    `revoke`: every grant and token of the account is revoked (refresh answers invalid_grant).
    `refresh_token_expired`: its refresh tokens die as a "Testing" app's do after 7 days."""
    if fault == "expire_access_token":
        now = timezone.now()
        GoogleAccessToken.objects.filter(email=account, expires_at__gt=now).update(expires_at=now)
        return True
    if fault == "refresh_token_expired":
        # https://developers.google.com/identity/protocols/oauth2#expiration: the grant ends
        # (Google answers as for a revoked token), not only the refresh token.
        GoogleGrant.objects.filter(email=account, offline=True).update(revoked=True)
        return True
    if fault == "revoke":
        GoogleGrant.objects.filter(email=account).update(revoked=True)
        GoogleAccessToken.objects.filter(email=account).update(revoked=True)
        return True
    return False


# --- Identity -----------------------------------------------------------------------------------


def google_sub(email: str) -> str:
    """Google's stable account id: a 21-digit number, here derived from the email."""
    return str(10**20 + stable_int("google-sub", email.lower()) % (9 * 10**20))


def display_names(email: str) -> tuple[str, str]:
    local = email.split("@", 1)[0]
    words = [w for w in re.split(r"[._+-]+", local) if w] or ["Sandbox"]
    given = words[0].capitalize()
    family = " ".join(w.capitalize() for w in words[1:]) or "Person"
    return given, family


# --- Consent page --------------------------------------------------------------------------------


def redirect_uris_registered(request: HttpRequest, client_id: str) -> set[str]:
    """The redirect URIs registered for a sandbox Google client, as in Google's Cloud Console:
    social-auth's complete URL of each Google provider using the client, under
    SIBLING_PUBLIC_URL and under the origin the sandbox is served from (Sibling's own in
    development), plus SIBLING_SANDBOX_REDIRECT_URIS."""
    from sources.providers import PROVIDERS
    from sources.providers.google import GoogleProvider

    origins = {settings.SIBLING_PUBLIC_URL.rstrip("/"), request.build_absolute_uri("/")[:-1]}
    base = urlsplit(settings.SIBLING_SANDBOX_BASE_URL)
    if base.scheme and base.netloc:
        origins.add(f"{base.scheme}://{base.netloc}")
    registered = set(settings.SIBLING_SANDBOX_REDIRECT_URIS)
    for provider in PROVIDERS.values():
        if not issubclass(provider, GoogleProvider):
            continue
        if provider.client_credentials().get("client_id") != client_id:
            continue
        path = reverse("social:complete", args=[provider.id])
        registered.update(f"{origin}{path}" for origin in origins if origin)
    return registered


@csrf_exempt  # Cross-site by design: the form posts back to this fake provider itself.
@require_http_methods(["GET", "POST"])
def authorize(request: HttpRequest) -> HttpResponse:
    """GET shows the consent page; POST (the page's form) answers with the redirect."""
    params = request.GET if request.method == "GET" else request.POST
    client_id = params.get("client_id", "")
    redirect_uri = params.get("redirect_uri", "")
    if client_secret_of(client_id) is None:
        return error_page(request, "invalid_client", "The OAuth client was not found.")
    if not redirect_uri or not redirect_valid(redirect_uri):
        return error_page(
            request, "invalid_request", "Missing or invalid required parameter: redirect_uri"
        )
    if redirect_uri not in redirect_uris_registered(request, client_id):
        # Google shows this page and never redirects to an unregistered URI.
        return error_page(
            request,
            "redirect_uri_mismatch",
            "You can't sign in to this app because it doesn't comply with Google's OAuth 2.0 "
            "policy. If you're the app developer, register the redirect URI in the Google Cloud "
            f"Console. Request details: redirect_uri={redirect_uri}",
        )
    if params.get("response_type", "") != "code":
        return error_page(
            request, "unsupported_response_type", "Only response_type=code is supported."
        )
    scopes = [s for s in params.get("scope", "").split() if s]
    if not scopes:
        return error_page(request, "invalid_request", "Missing required parameter: scope")
    challenge = params.get("code_challenge", "")
    method = params.get("code_challenge_method", "") or ("plain" if challenge else "")
    if method not in ("", "plain", "S256"):
        return error_page(request, "invalid_request", "Invalid code_challenge_method.")
    state = params.get("state", "")
    # Granular consent: one box per scope beyond the basic ones, all ticked at first.
    choices = [{"scope": s, "words": scope_describe(s), "basic": s in BASIC_SCOPES} for s in scopes]
    context = {
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": " ".join(scopes),
        "scopes": [scope_describe(s) for s in scopes],
        "scope_choices": choices,
        "state": state,
        "access_type": params.get("access_type", "online"),
        "prompt": params.get("prompt", ""),
        "code_challenge": challenge,
        "code_challenge_method": method if challenge else "",
        "email": params.get("email", DEFAULT_EMAIL) if request.method == "POST" else DEFAULT_EMAIL,
        "email_error": "",
    }
    if request.method == "GET":
        return render(request, "sandbox/consent.html", context)

    state_param = {"state": state} if state else {}
    if params.get("decision") != "allow":
        return HttpResponseRedirect(
            url_with_query(redirect_uri, {"error": "access_denied", **state_param})
        )
    email = params.get("email", "").strip().lower()
    if not EMAIL_PATTERN.match(email):
        context["email_error"] = "Enter a valid email address."
        return render(request, "sandbox/consent.html", context, status=400)
    google_account_ensure(email)
    granted = scopes
    if params.get("granular") == "1":
        # The page's boxes: a box left unticked is a scope not granted. (A form without the
        # marker, as a script posts it, grants every scope asked for.)
        # Each box is its own field (`grant:<scope>`), sent only when ticked.
        granted = [s for s in scopes if s in BASIC_SCOPES or params.get(f"grant:{s}") == "1"]
    granted = scopes_expand(granted)
    code = GoogleAuthCode.objects.create(
        code=random_token("4/0", 36),
        client_id=client_id,
        redirect_uri=redirect_uri,
        email=email,
        scopes=granted,
        offline=context["access_type"] == "offline",
        code_challenge=challenge,
        code_challenge_method=context["code_challenge_method"],
        expires_at=timezone.now() + CODE_LIFETIME,
    )
    return HttpResponseRedirect(
        url_with_query(redirect_uri, {"code": code.code, **state_param, "scope": " ".join(granted)})
    )


# --- Token endpoint -------------------------------------------------------------------------------


def _authenticated_client(request: HttpRequest) -> str | None:
    basic = basic_credentials(request)
    client_id, secret = basic or (
        request.POST.get("client_id", ""),
        request.POST.get("client_secret", ""),
    )
    expected = client_secret_of(client_id)
    if expected is None or not secrets.compare_digest(expected, secret):
        return None
    return client_id


def _pkce_ok(code: GoogleAuthCode, verifier: str) -> bool:
    if not code.code_challenge:
        return True
    if not verifier:
        return False
    if code.code_challenge_method == "S256":
        hashed = hashlib.sha256(verifier.encode()).digest()
        computed = base64.urlsafe_b64encode(hashed).decode().rstrip("=")
    else:
        computed = verifier
    return secrets.compare_digest(computed, code.code_challenge)


def _issue_access_token(grant: GoogleGrant) -> GoogleAccessToken:
    return GoogleAccessToken.objects.create(
        token=random_token("ya29.", 48),
        grant=grant,
        email=grant.email,
        scopes=grant.scopes,
        expires_at=timezone.now() + timedelta(seconds=ACCESS_TOKEN_SECONDS),
    )


def _token_body(access: GoogleAccessToken, *, client_id: str = "") -> dict:
    body = {
        "access_token": access.token,
        "expires_in": ACCESS_TOKEN_SECONDS,
        "scope": " ".join(access.scopes),
        "token_type": "Bearer",
    }
    if client_id and "openid" in access.scopes:
        # Google returns an ID token whenever `openid` was granted, on refresh too.
        body["id_token"] = user_id_token(client_id=client_id, email=access.email)
    return body


@csrf_exempt
@require_POST
def token(request: HttpRequest) -> HttpResponse:
    """`grant_type=authorization_code` or `refresh_token`, form-encoded."""
    client_id = _authenticated_client(request)
    if client_id is None:
        return oauth_error("invalid_client", "The OAuth client was not found.", status=401)
    grant_type = request.POST.get("grant_type", "")
    now = timezone.now()

    if grant_type == "authorization_code":
        value = request.POST.get("code", "")
        if not value:
            return oauth_error("invalid_request", "Missing required parameter: code")
        code = GoogleAuthCode.objects.filter(code=value, client_id=client_id).first()
        if code is None:
            return invalid_grant()
        # Spend the code first: a failed redirect_uri or PKCE check must not leave it reusable.
        spent = GoogleAuthCode.objects.filter(pk=code.pk, used=False, expires_at__gt=now).update(
            used=True
        )
        if not spent:
            return invalid_grant()
        if request.POST.get("redirect_uri", "") != code.redirect_uri:
            return oauth_error("redirect_uri_mismatch", "Bad Request")
        if not _pkce_ok(code, request.POST.get("code_verifier", "")):
            return invalid_grant()
        grant = GoogleGrant.objects.create(
            refresh_token=random_token("1//0", 48),
            client_id=client_id,
            email=code.email,
            scopes=code.scopes,
            offline=code.offline,
            created_at=now,
        )
        body = _token_body(_issue_access_token(grant), client_id=client_id)
        if grant.offline:
            body["refresh_token"] = grant.refresh_token
        return json_response(body)

    if grant_type == "refresh_token":
        value = request.POST.get("refresh_token", "")
        if not value:
            return oauth_error("invalid_request", "Missing required parameter: refresh_token")
        grant = GoogleGrant.objects.filter(
            refresh_token=value, client_id=client_id, offline=True, revoked=False
        ).first()
        if grant is None:
            return invalid_grant()
        if client_id not in settings.SIBLING_SANDBOX_ROTATING_CLIENTS:
            # Google does not rotate refresh tokens: the answer carries no new one.
            return json_response(_token_body(_issue_access_token(grant), client_id=client_id))
        # A client configured to rotate behaves like OAuth servers that rotate (RFC 6749
        # section 6 allows it): every refresh returns a new refresh token and the one used stops
        # working (single use).
        rotated = random_token("1//0", 48)
        swapped = GoogleGrant.objects.filter(pk=grant.pk, refresh_token=value).update(
            refresh_token=rotated
        )
        if not swapped:
            return invalid_grant()
        grant.refresh_token = rotated
        body = _token_body(_issue_access_token(grant), client_id=client_id)
        body["refresh_token"] = rotated
        return json_response(body)

    return oauth_error("unsupported_grant_type", f"Invalid grant_type: {grant_type}")


def _grant_of(value: str) -> GoogleGrant | None:
    """The live grant a refresh token or an unexpired access token belongs to."""
    if not value:
        return None
    grant = GoogleGrant.objects.filter(refresh_token=value, revoked=False).first()
    if grant is None:
        access = GoogleAccessToken.objects.filter(token=value, revoked=False).first()
        if access is not None and access.expires_at > timezone.now():
            grant = GoogleGrant.objects.filter(pk=access.grant_id, revoked=False).first()
    return grant


def _rfc7009_strict(*client_ids: str | None) -> bool:
    return any(c in settings.SIBLING_SANDBOX_RFC7009_CLIENTS for c in client_ids if c)


@csrf_exempt
@require_POST
def revoke(request: HttpRequest) -> HttpResponse:
    """Revoke an access or refresh token; either way the whole grant ends, as at Google.

    Google takes the token alone (form body or query) and answers 200 `{}`, or 400 invalid_token
    for a token it does not know or that is already expired or revoked. A Google account's
    `server_error` fault answers 503 instead (nothing is revoked).

    A client listed in `SIBLING_SANDBOX_RFC7009_CLIENTS` gets a strict RFC 7009 server instead
    (https://www.rfc-editor.org/rfc/rfc7009#section-2): the client must authenticate (HTTP Basic
    or client_secret_post), else 401 invalid_client; an unknown or already invalid token is
    answered 200, and so is a valid one after it is revoked.
    """
    value = request.POST.get("token") or request.GET.get("token") or ""
    client_id = _authenticated_client(request)
    grant = _grant_of(value)
    if _rfc7009_strict(client_id, grant.client_id if grant else None):
        if client_id is None:
            return oauth_error("invalid_client", "Client authentication failed.", status=401)
        if not value:
            return oauth_error("invalid_request", "Missing required parameter: token")
        if grant is not None and grant.client_id != client_id:
            # RFC 7009 section 2.1: a token issued to another client is not this client's to
            # revoke; the server answers as for an invalid token and keeps it.
            return json_response({})
    elif not value:
        return oauth_error("invalid_request", "Missing required parameter: token")
    elif grant is None:
        return oauth_error("invalid_token", "Token expired or revoked")
    if grant is None:
        return json_response({})
    if fault_take("google", grant.email, "server_error"):
        return oauth_error(
            "temporarily_unavailable", "The service is currently unavailable.", status=503
        )
    GoogleGrant.objects.filter(pk=grant.pk).update(revoked=True)
    GoogleAccessToken.objects.filter(grant_id=grant.pk).update(revoked=True)
    return json_response({})


# --- Bearer check shared by the Google APIs ------------------------------------------------------


@dataclass(frozen=True)
class GoogleCaller:
    """Who is calling a Google API: the account's email and the token's scopes."""

    email: str
    scopes: frozenset[str]
    pending_faults: frozenset[str]

    def has_any_scope(self, *wanted: str) -> bool:
        return any(s in self.scopes for s in wanted)


def google_caller(
    request: HttpRequest, service: str, *, server_error_status: int = 500
) -> GoogleCaller | HttpResponse:
    """Authenticate the bearer token, then apply the account's rate-limit and 5xx faults.

    Returns the caller, or the error response to send as it is.
    """
    value = bearer_token(request)
    access = GoogleAccessToken.objects.filter(token=value).first() if value else None
    if access is None or access.revoked or access.expires_at <= timezone.now():
        return unauthenticated()
    pending = faults_pending("google", access.email)
    if fault_take("google", access.email, "rate_limit", pending):
        return rate_limited(service)
    if fault_take("google", access.email, "server_error", pending):
        return backend_error(service, server_error_status)
    return GoogleCaller(
        email=access.email, scopes=frozenset(access.scopes), pending_faults=frozenset(pending)
    )


def google_quota_caller(request: HttpRequest) -> QuotaCaller | None:
    """Whose quotas a Google API call spends: the token's account and OAuth client (None for
    a token the API would refuse, which then answers 401 uncharged)."""
    value = bearer_token(request)
    access = GoogleAccessToken.objects.filter(token=value).first() if value else None
    if access is None or access.revoked or access.expires_at <= timezone.now():
        return None
    return QuotaCaller(account=access.email, app=_grant_client(access.grant_id))


@functools.lru_cache(maxsize=4096)
def _grant_client(grant_id: Any) -> str:
    # A grant's client never changes: read once per process, not on every API call.
    client_id = GoogleGrant.objects.filter(pk=grant_id).values_list("client_id", flat=True).first()
    return client_id or ""


def _userinfo_error(api_answer: HttpResponse) -> HttpResponse:
    """The userinfo endpoint's errors are OAuth's flat {"error", "error_description"}, not the
    APIs' envelope (a bad token: 401 invalid_request "Invalid Credentials")."""
    status = api_answer.status_code
    if status == 401:
        response = oauth_error("invalid_request", "Invalid Credentials", status=401)
        response["WWW-Authenticate"] = api_answer["WWW-Authenticate"]
        return response
    if status == 429:
        response = oauth_error("rate_limit_exceeded", "Rate limit exceeded.", status=429)
        response["Retry-After"] = api_answer.get("Retry-After", str(RETRY_AFTER_SECONDS))
        return response
    if status == 503:
        return oauth_error(
            "temporarily_unavailable", "The service is currently unavailable.", status=503
        )
    return oauth_error("server_error", "Backend Error", status=status)


@csrf_exempt
@require_GET
def userinfo(request: HttpRequest) -> HttpResponse:
    """OpenID Connect userinfo (v3): the identity social-auth stores."""
    caller = google_caller(request, "oauth2.googleapis.com")
    if isinstance(caller, HttpResponse):
        return _userinfo_error(caller)
    given, family = display_names(caller.email)
    sub = google_sub(caller.email)
    body = {
        "sub": sub,
        "name": f"{given} {family}",
        "given_name": given,
        "family_name": family,
        "picture": request.build_absolute_uri(reverse("sandbox:google-avatar", args=[sub])),
        "email": caller.email,
        "email_verified": True,
    }
    if fault_take("google", caller.email, "userinfo_unverified", set(caller.pending_faults)):
        del body["email_verified"]  # an optional claim in OpenID Connect
    return json_response(body)


@require_GET
def avatar(request: HttpRequest, sub: str) -> HttpResponse:
    """A local stand-in for the profile picture URL, so pages showing it load nothing external."""
    hue = int(sub[-3:]) % 360 if sub[-3:].isdigit() else 200
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" width="96" height="96" viewBox="0 0 96 96">'
        f'<rect width="96" height="96" rx="48" fill="hsl({hue},45%,45%)"/>'
        '<text x="48" y="58" font-size="32" text-anchor="middle" fill="#fff" '
        'font-family="sans-serif">S</text></svg>'
    )
    return HttpResponse(svg, content_type="image/svg+xml")


# --- Google's ID-token signing keys ---------------------------------------------------------------

GOOGLE_ISSUER = "https://accounts.google.com"
GOOGLE_OIDC_KEY_PURPOSE = "google-oidc"


def google_oidc_signing_key() -> tuple[str, rsa.RSAPrivateKey]:
    """The sandbox's RSA key for Google ID tokens: (kid, private key), generated once and stored."""
    stored = signing_key_stored(GOOGLE_OIDC_KEY_PURPOSE, "rsa")
    private = private_key_of(stored)
    if not isinstance(private, rsa.RSAPrivateKey):
        raise TypeError("the stored Google OIDC key is not an RSA key")
    return stored.kid, private


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def google_jwks() -> dict:
    """The public keys as https://www.googleapis.com/oauth2/v3/certs lists them."""
    kid, private = google_oidc_signing_key()
    numbers = private.public_key().public_numbers()
    return {
        "keys": [
            {
                "kty": "RSA",
                "alg": "RS256",
                "use": "sig",
                "kid": kid,
                "n": _b64url_uint(numbers.n),
                "e": _b64url_uint(numbers.e),
            }
        ]
    }


def service_account_id(email: str) -> str:
    """A service account's stable 21-digit unique id, used as `sub` and `azp`."""
    return str(10**20 + stable_int("service-account", email) % (9 * 10**20))


def google_id_token(
    *,
    audience: str,
    email: str,
    issuer: str = GOOGLE_ISSUER,
    lifetime_s: int = 3600,
    iat: int | None = None,
    key: Any = None,
    kid: str | None = None,
) -> str:
    """An RS256 ID token of a service account, as Google attaches to authenticated pushes.

    Claims aud, azp, email, email_verified, exp, iat, iss, sub. `iat`/`lifetime_s` make expired
    tokens, `key`/`kid` tokens Google's keys do not verify.
    """
    current_kid, current_key = google_oidc_signing_key()
    issued = int(time.time()) if iat is None else int(iat)
    account_id = service_account_id(email)
    claims = {
        "aud": audience,
        "azp": account_id,
        "email": email,
        "email_verified": True,
        "exp": issued + lifetime_s,
        "iat": issued,
        "iss": issuer,
        "sub": account_id,
    }
    return jwt.encode(
        claims,
        key if key is not None else current_key,
        algorithm="RS256",
        headers={"kid": kid if kid is not None else current_kid},
    )


def user_id_token(*, client_id: str, email: str, lifetime_s: int = 3600) -> str:
    """The RS256 ID token of a person's sign-in, as the token endpoint returns it when `openid`
    was granted: iss, azp, aud (the client id), sub, email, email_verified, iat, exp; signed with
    the key the sandbox's certs URL lists."""
    kid, private = google_oidc_signing_key()
    issued = int(time.time())
    claims = {
        "iss": GOOGLE_ISSUER,
        "azp": client_id,
        "aud": client_id,
        "sub": google_sub(email),
        "email": email,
        "email_verified": True,
        "iat": issued,
        "exp": issued + lifetime_s,
    }
    return jwt.encode(claims, private, algorithm="RS256", headers={"kid": kid})


@require_GET
def certs(request: HttpRequest) -> HttpResponse:
    """Google's OAuth2 certs (JWKS) for the sandbox's ID tokens."""
    response = json_response(google_jwks())
    response["Cache-Control"] = "public, max-age=300"
    return response
