"""Helpers every provider imitation shares: responses, tokens, opaque cursors, seeded data."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import secrets
import string
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

BASE62 = string.digits + string.ascii_letters
# Providers ask clients to back off for about this long; tests never sleep on it.
RETRY_AFTER_SECONDS = 30


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> JsonResponse:
    """JSON with the provider's content type; lists and empty objects allowed."""
    response = JsonResponse(data, status=status, safe=False, json_dumps_params={"indent": None})
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def random_token(prefix: str = "", nbytes: int = 32) -> str:
    return f"{prefix}{secrets.token_urlsafe(nbytes)}"


def random_base62(length: int) -> str:
    return "".join(secrets.choice(BASE62) for _ in range(length))


def digest(*parts: object) -> bytes:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()


def stable_int(*parts: object) -> int:
    """A large non-negative integer that depends only on `parts` (not on PYTHONHASHSEED)."""
    return int.from_bytes(digest(*parts)[:16], "big")


def stable_base62(length: int, *parts: object) -> str:
    value = stable_int(*parts)
    chars = []
    for _ in range(length):
        value, rest = divmod(value, 62)
        chars.append(BASE62[rest])
        if value == 0:
            value = stable_int(*parts, len(chars))
    return "".join(chars)


def seeded_random(*parts: object) -> random.Random:
    """The generator behind every piece of synthetic data: same identity, same history."""
    return random.Random(stable_int(*parts))  # noqa: S311 - synthetic data, not security


def opaque_encode(payload: Any) -> str:
    """An opaque page token or cursor (base64url of compact JSON, no padding)."""
    raw = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def opaque_decode(token: str) -> Any | None:
    """The payload of `opaque_encode`, or None for anything a client made up or truncated."""
    if not token or len(token) > 1024:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None


def bearer_token(request: HttpRequest) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.GET.get("access_token") or None


def basic_credentials(request: HttpRequest) -> tuple[str, str] | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip()).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def json_body(request: HttpRequest) -> dict[str, Any] | None:
    """The request's JSON object, or None when the body is not a JSON object."""
    try:
        data = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def rfc3339(moment: datetime) -> str:
    """Google's timestamp form: UTC, whole seconds, trailing Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def fixed_zone(offset_seconds: int) -> timezone:
    return timezone(timedelta(seconds=offset_seconds))


def parse_iso_date(value: str) -> date | None:
    try:
        return date.fromisoformat(value)
    except (TypeError, ValueError):
        return None


def client_secret_of(client_id: str) -> str | None:
    """The secret of a sandboxed OAuth client, or None for a client the sandbox does not know."""
    return settings.SIBLING_SANDBOX_CLIENTS.get(client_id)


def redirect_valid(uri: str) -> bool:
    parts = urlsplit(uri)
    return parts.scheme in ("http", "https") and bool(parts.netloc) and not parts.fragment


def url_with_query(uri: str, params: dict[str, str]) -> str:
    """``uri`` with ``params`` added to its query (what a consent page redirects to)."""
    parts = urlsplit(uri)
    query = "&".join(p for p in (parts.query, urlencode(params)) if p)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def error_page(request: HttpRequest, error: str, message: str) -> HttpResponse:
    """The page a provider shows instead of its consent page for a broken request."""
    return render(request, "sandbox/error.html", {"error": error, "message": message}, status=400)
