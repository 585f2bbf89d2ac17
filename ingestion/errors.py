"""How a sync fails, by what the runner should do about it."""

from __future__ import annotations

from datetime import datetime


class SyncError(Exception):
    """A provider call failed. Messages never contain a secret or a personal field."""


class TransientError(SyncError):
    """5xx, timeouts, resets: retried with backoff, then the run fails and is retried later."""


class RateLimited(SyncError):
    """429 or a quota error; retry_after_s from Retry-After or the provider's reset header."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Deferred(SyncError):
    """The provider asks for a wait too long to spend in a worker: sync again at ``until``."""

    def __init__(self, message: str, *, until: datetime) -> None:
        super().__init__(message)
        self.until = until


class AccessExpired(SyncError):
    """The access token was refused (401): refresh it, then try again once."""


class ReauthRequired(SyncError):
    """The grant is gone (invalid_grant, revoked, login required): the person must reconnect."""


class PermanentError(SyncError):
    """The provider refused the request itself; retrying it unchanged will not help."""


class PersonErased(SyncError):
    """The person is being (or has been) erased: nothing more of theirs may be stored."""
