"""Why a provider call or a sync failed, by what the caller should do about it.

One hierarchy for every provider call, at connect time as in syncs:

    SyncError                  a sync stopped; the message is safe to show
    ├── ProviderError          a provider call failed (connect, sync, webhook, revocation)
    │   ├── TransientError     5xx, timeouts, resets: retried, then the run is retried later
    │   ├── RateLimited        429 or a quota answer
    │   ├── Deferred           a wait too long to spend in a worker
    │   ├── AccessExpired      401: refresh the access token, then try once more
    │   ├── ReauthRequired     the person must connect again (alias: ProviderAuthError)
    │   ├── PermanentError     the provider refused the request itself
    │   └── RevocationError    a revocation the provider did not confirm
    └── PersonErased           the person is being erased

Every message is written to be shown to the person and to staff: it never holds a secret (a
token, a key, a request that carries one) or a personal field. Callers rely on that: the runner
stores ``str(err)`` of any SyncError, views show ``str(err)`` of any ProviderError.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any


class SyncError(Exception):
    """A sync failed. Messages never contain a secret or a personal field."""


class ProviderError(SyncError):
    """A provider call failed. The message is safe to show and never holds a secret."""


class TransientError(ProviderError):
    """5xx, timeouts, resets: retried with backoff, then the run fails and is retried later."""


class RateLimited(ProviderError):
    """429 or a quota error; retry_after_s from Retry-After or the provider's reset header."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Deferred(ProviderError):
    """The provider asks for a wait too long to spend in a worker: sync again at ``until``."""

    def __init__(self, message: str, *, until: datetime) -> None:
        super().__init__(message)
        self.until = until


class AccessExpired(ProviderError):
    """The access token was refused (401): refresh it, then try again once."""


class ReauthRequired(ProviderError):
    """The provider refused the credentials for good (invalid_grant, a revoked grant, a key it
    no longer accepts, a login the bank asks for): the person must connect again."""


# The name the connect flows use; one class, so an except of either name catches both.
ProviderAuthError = ReauthRequired


class PermanentError(ProviderError):
    """The provider refused the request itself; retrying it unchanged will not help."""


class RevocationError(ProviderError):
    """The provider did not confirm a revocation.

    ``code`` says why in a form safe for logs and staff pages: the provider's error code or HTTP
    status (``"503"``, ``"400 invalid_client"``, ``"INTERNAL_SERVER_ERROR"``) or the class of
    the network error (``"ConnectTimeout"``). Never a token.

    ``retry_token`` (a ``sources.providers.base.RevocationToken``) is set by a provider that
    spent the token it was given while trying (a refresh that rotates the refresh token, before
    the revocation call failed): a later attempt must use this one instead.
    """

    def __init__(self, message: str, *, code: str, retry_token: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.retry_token = retry_token


class PersonErased(SyncError):
    """The person is being (or has been) erased: nothing more of theirs may be stored."""


_SAFE_CODE = re.compile(r"[^A-Za-z0-9_.\- ]")


def error_code_safe(value: object) -> str:
    """A provider's error code, cut to what can be logged: it is the provider's text."""
    return _SAFE_CODE.sub("", str(value or ""))[:60]


__all__ = [
    "AccessExpired",
    "Deferred",
    "PermanentError",
    "PersonErased",
    "ProviderAuthError",
    "ProviderError",
    "RateLimited",
    "ReauthRequired",
    "RevocationError",
    "SyncError",
    "TransientError",
    "error_code_safe",
]
