"""Google's API errors, read once for every Google API a provider calls.

Google answers errors in one envelope (https://cloud.google.com/apis/design/errors and each
API's "handle errors" guide)::

    {"error": {"code": 403, "message": "...", "status": "PERMISSION_DENIED",
               "errors": [{"domain": "usageLimits", "reason": "userRateLimitExceeded"}],
               "details": [{"@type": "...ErrorInfo", "reason": "RATE_LIMIT_EXCEEDED"}]}}

The legacy ``errors[].reason`` and the newer ``details[].reason`` (ErrorInfo) may both be there;
either says what happened. ``google_check`` maps an answer to what the caller does:

- 401 (``authError``): ``AccessExpired``; the HTTP layer refreshes the token and tries once more,
  then ``ReauthRequired``. A refresh refused with ``invalid_grant`` (revoked, expired, a password
  change) is ``ReauthRequired`` in ``ingestion.tokens``.
- 429, or a 403 whose reason is a rate or quota reason, or status ``RESOURCE_EXHAUSTED``:
  ``RateLimited``. A daily quota waits for its reset (midnight Pacific time); ``quotaExceeded``
  backs off longer than a per-minute limit (Calendar's guide: "back off longer").
- 5xx, or ``backendError`` / ``internalError`` whatever the status: ``TransientError``.
- 404: ``NotFound``, 410: ``Gone`` (a sync token or history id Google no longer keeps), both
  ``PermanentError`` with the reasons, for a client that recovers from them.
- any other 4xx: ``PermanentError``.

Reasons are Google's fixed vocabulary, never personal data: they go into messages (a reason or
status that is not one word is ignored).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import requests

from ingestion.errors import AccessExpired, PermanentError, RateLimited, TransientError
from ingestion.http import retry_after_s

# errors[].reason (legacy) and ErrorInfo reasons meaning "slow down".
RATE_LIMIT_REASONS = frozenset(
    {
        "rateLimitExceeded",
        "userRateLimitExceeded",
        "quotaExceeded",
        "dailyLimitExceeded",
        "RATE_LIMIT_EXCEEDED",
    }
)
DAILY_LIMIT_REASONS = frozenset({"dailyLimitExceeded"})
# "Calendar usage limits exceeded": back off longer than a per-minute limit asks.
LONG_LIMIT_REASONS = frozenset({"quotaExceeded"})
LONG_LIMIT_WAIT_S = 300.0
TRANSIENT_REASONS = frozenset({"backendError", "internalError"})
# Google's daily quotas reset at midnight Pacific time.
QUOTA_DAY_ZONE = ZoneInfo("America/Los_Angeles")


class GoogleError(PermanentError):
    """A refusal the caller may recover from; ``reasons`` are Google's, ``status`` the
    envelope's (``NOT_FOUND``, ...)."""

    def __init__(self, message: str, *, reasons: frozenset[str], status: str) -> None:
        super().__init__(message)
        self.reasons = reasons
        self.status = status


class NotFound(GoogleError):
    """404: the resource is not (or no longer) there, or a history id too old to replay."""


class Gone(GoogleError):
    """410: a sync token Google no longer honours (``fullSyncRequired``, ``updatedMinTooLongAgo``,
    ``deleted``): the caller syncs in full again."""


# Google's reasons and statuses are single words ("quotaExceeded", "NOT_FOUND"); anything else
# (a proxy's text in the same envelope) is not read, so it never reaches a message.
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,59}")


def _word(value: object) -> bool:
    return isinstance(value, str) and _WORD.fullmatch(value) is not None


def google_error_fields(response: requests.Response) -> tuple[frozenset[str], str]:
    """The reasons and the status of Google's error envelope; empty when there is none."""
    try:
        body = response.json()
    except ValueError:
        return frozenset(), ""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return frozenset(), ""
    reasons = {
        entry["reason"]
        for key in ("errors", "details")
        for entry in (error.get(key) if isinstance(error.get(key), list) else [])
        if isinstance(entry, dict) and _word(entry.get("reason"))
    }
    status = error.get("status")
    return frozenset(reasons), status if _word(status) else ""


def seconds_to_quota_reset(now: datetime | None = None) -> float:
    """Seconds until the next midnight Pacific time, when Google's daily quotas reset."""
    local = (now or datetime.now(QUOTA_DAY_ZONE)).astimezone(QUOTA_DAY_ZONE)
    midnight = (local + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    # In UTC: a subtraction within one zone counts wall-clock hours, wrong across a clock change.
    return max(60.0, (midnight.astimezone(UTC) - local.astimezone(UTC)).total_seconds())


def google_check(response: requests.Response, *, provider_name: str) -> None:
    """Raise what the answer means (see the module docstring); return on success."""
    status = response.status_code
    if status < 400:
        return
    if status == 401:
        raise AccessExpired(f"{provider_name} refused the access token")
    reasons, api_status = google_error_fields(response)
    label = (", ".join(sorted(reasons)) or api_status or "error")[:80]
    rate_limited = bool(reasons & RATE_LIMIT_REASONS) or api_status == "RESOURCE_EXHAUSTED"
    if status == 429 or (status == 403 and rate_limited):
        wait = retry_after_s(response)
        if wait is None and reasons & DAILY_LIMIT_REASONS:
            wait = seconds_to_quota_reset()
        elif wait is None and reasons & LONG_LIMIT_REASONS:
            wait = LONG_LIMIT_WAIT_S
        raise RateLimited(f"{provider_name} rate limit ({label})", retry_after_s=wait)
    if status >= 500 or reasons & TRANSIENT_REASONS:
        raise TransientError(f"{provider_name} answered {status} ({label})")
    if status == 404:
        raise NotFound(
            f"{provider_name} answered 404 ({label})", reasons=reasons, status=api_status
        )
    if status == 410:
        raise Gone(f"{provider_name} answered 410 ({label})", reasons=reasons, status=api_status)
    raise PermanentError(f"{provider_name} answered {status} ({label})")
