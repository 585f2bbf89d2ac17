"""Strava: a person's activities (runs, rides, swims...) as workouts, through Strava's own OAuth2.

https://developers.strava.com/docs/authentication/ and https://developers.strava.com/docs/
(rate limits, webhooks). Access tokens last six hours; every refresh may return a new refresh
token and the one used stops working (sources.providers tokens are saved before use). The rate
limits are per application, shared by every athlete (see client.py).
"""

from __future__ import annotations

from typing import Any

import requests
from django.conf import settings

from ingestion.http import CallCounter, ProviderHttp, RetryPolicy
from sources.providers.base import (
    DAY,
    HOUR,
    Budget,
    OAuth2Provider,
    ProviderError,
    RevocationError,
    RevocationToken,
    Setting,
    Stream,
)
from sources.providers.kinds import WORKOUT
from sources.providers.strava.auth import StravaBackend

# The sandbox's one push subscription (one per application at Strava) has this id.
SANDBOX_SUBSCRIPTION_ID = "120475"
QUARTER_S = 15 * 60
DAY_S = 24 * 3600
# Usage header prefixes of the two limits (names matched case-insensitively, as requests does),
# each "<15 min>,<day>": https://developers.strava.com/docs/rate-limits/
USAGE_HEADERS = {"overall": "X-RateLimit", "read": "X-ReadRateLimit"}


def _pair(value: str | None) -> tuple[int, int] | None:
    parts = (value or "").split(",")
    if len(parts) != 2:
        return None
    try:
        return int(parts[0].strip()), int(parts[1].strip())
    except ValueError:
        return None


def usage_from(response: requests.Response) -> dict[str, tuple[int, int, int, int]]:
    """{"overall"|"read": (15-min limit, daily limit, 15-min usage, daily usage)}."""
    found = {}
    for name, prefix in USAGE_HEADERS.items():
        limit = _pair(response.headers.get(f"{prefix}-Limit"))
        usage = _pair(response.headers.get(f"{prefix}-Usage"))
        if limit and usage:
            found[name] = (*limit, *usage)
    return found


class Strava(OAuth2Provider):
    """Activities from Strava, one workout record each."""

    id = "strava"
    name = "Strava"
    category = "behavioral"
    # activity:read_all adds "Only You" activities and privacy zones to activity:read (which
    # activity webhooks need); Strava's scopes are comma-separated (auth.StravaBackend).
    scopes = ("activity:read_all",)
    streams = (Stream("activities", kind="workout"),)
    kinds = (WORKOUT,)
    credentials = {"client_id": "sandbox-strava-client", "client_secret": "sandbox-strava-secret"}
    settings = (
        # The token Strava echoes in a push subscription's validation request; unset, no
        # subscription validates.
        Setting("webhook_verify_token", sandbox_default="sandbox-strava-verify-token"),
        # Strava signs no event: only events naming this subscription are taken (as hints;
        # the data itself is read from the API). Unset, every event is refused.
        Setting("webhook_subscription_id", sandbox_default=SANDBOX_SUBSCRIPTION_ID),
        # Calls left unspent in each rate-limit window (15 minutes, day) for what is not a sync
        # (at most a tenth of a window): the budget is the application's, shared by every
        # athlete and worker.
        Setting("rate_limit_reserve", default=5, cast=int),
        # Activities per page (Strava allows up to 200).
        Setting("page_size", default=200, cast=int),
        # An incremental sync reads again the activities started this long before the latest
        # one stored: a device uploads late, and titles and types change after upload.
        Setting("refetch_hours", default=72, cast=int),
    )
    urls = {
        "authorize": "https://www.strava.com/oauth/authorize",
        "token": "https://www.strava.com/oauth/token",
        "revoke": "https://www.strava.com/oauth/deauthorize",
        "api": "https://www.strava.com/api/v3",
    }
    sandbox_paths = {
        "authorize": "/strava/oauth/authorize",
        "token": "/strava/oauth/token",
        "revoke": "/strava/oauth/deauthorize",
        "api": "/strava/api/v3",
    }
    # Per application, shared by every athlete; windows reset at :00, :15, :30, :45 and at
    # midnight UTC (https://developers.strava.com/docs/rate-limits/). A sync only reads, so
    # every call it makes counts in all four.
    budgets = (
        Budget("read_15min", limit=100, window_s=QUARTER_S, per="app", aligned=True),
        Budget("read_daily", limit=1_000, window_s=DAY_S, per="app", aligned=True),
        Budget("overall_15min", limit=200, window_s=QUARTER_S, per="app", aligned=True),
        Budget("overall_daily", limit=2_000, window_s=DAY_S, per="app", aligned=True),
    )
    # Strava asks again for consent only when told to: a reconnect then shows the scopes again.
    auth_extra_arguments = {"approval_prompt": "force"}
    reauth_message = "Strava asks you to connect your account again."
    default_sync_interval_s = 6 * HOUR
    # Strava's read limits belong to the application, shared by every athlete (1,000 reads a
    # day: https://developers.strava.com/docs/rate-limits/), and its webhooks announce each new
    # activity, so a schedule more often than every 6 hours would spend everyone's budget.
    sync_interval_choices = (6 * HOUR, 12 * HOUR, DAY)
    # GET /athlete/activities without ``after`` lists every activity the athlete has.
    max_backfill_days = None
    client_path = "sources.providers.strava.client.StravaSyncClient"
    processor_path = "sources.providers.strava.processors.page_process"
    webhook_receiver_path = "sources.providers.strava.webhooks.StravaWebhookReceiver"
    webhook_handler_path = "sources.providers.strava.webhooks.event_handle"
    backend_base = StravaBackend

    @classmethod
    def budget_remaining(cls, response: requests.Response) -> dict[str, int]:
        """Every answer says the limits and the usage so far: what remains of each window, less
        ``STRAVA_RATE_LIMIT_RESERVE``; calls made elsewhere (another host, a script) count."""
        remaining = {}
        for name, (limit_15, limit_day, used_15, used_day) in usage_from(response).items():
            remaining[f"{name}_15min"] = limit_15 - used_15 - _reserve(limit_15)
            remaining[f"{name}_daily"] = limit_day - used_day - _reserve(limit_day)
        return remaining

    @classmethod
    def revoke_token(cls, token: RevocationToken) -> None:
        """``POST /oauth/deauthorize`` with an access token: every token of the application
        for the athlete stops working; 200 confirms it.

        Access tokens last six hours, so a stored one has often expired, and deauthorizing
        with it would prove nothing. The refresh token (preferred by ``revocation_token``) is
        therefore first exchanged for a working access token; Strava refusing it (400) means
        the grant is already gone. With an access token alone, a 401 says the same.

        That exchange spends the refresh token given (Strava rotates them): when the
        deauthorization then fails, the error carries the new refresh token for the next
        attempt (``RevocationError.retry_token``), which would otherwise find the spent one
        refused and count the grant as gone while it lives.
        """
        access, retry = token.value, None
        if token.hint == "refresh_token":
            refreshed = cls._revocation_call(
                "token",
                {
                    **cls.client_credentials(),
                    "grant_type": "refresh_token",
                    "refresh_token": token.value,
                },
            )
            if refreshed.status_code == 400:
                return  # RefreshToken invalid: deauthorized or spent already
            try:
                body = refreshed.json()
                access = str(body["access_token"])
            except (ValueError, KeyError, TypeError):
                raise RevocationError(
                    "Strava did not confirm that Sibling's access was withdrawn",
                    code=str(refreshed.status_code),
                ) from None
            if isinstance(body.get("refresh_token"), str) and body["refresh_token"]:
                retry = RevocationToken(body["refresh_token"], "refresh_token")
        try:
            response = cls._revocation_call("revoke", {"access_token": access})
        except RevocationError as err:
            err.retry_token = retry
            raise
        if response.status_code == 200 or (
            response.status_code == 401 and token.hint == "access_token"
        ):
            return
        raise RevocationError(
            "Strava did not confirm that Sibling's access was withdrawn",
            code=str(response.status_code),
            retry_token=retry,
        )

    @classmethod
    def _revocation_call(cls, endpoint: str, data: dict[str, Any]) -> requests.Response:
        """One form POST through the shared HTTP layer; any status comes back to be read.

        One attempt: a revocation not confirmed is kept and retried with backoff by
        sources.revocations, so the person waiting is not held for retries."""
        http = ProviderHttp(
            provider_name=cls.name,
            policy=RetryPolicy(max_attempts=1),
            counter=CallCounter(),
            check=_any_answer,
        )
        try:
            with http:
                return http.request("POST", cls.url(endpoint), data=data)
        except ProviderError as err:
            # Named by the network error's class: the request in the cause carries the token.
            cause = err.__cause__ or err
            raise RevocationError(
                "Strava could not be reached to withdraw Sibling's access",
                code=type(cause).__name__,
            ) from None


def _any_answer(response: requests.Response) -> None:
    """Every HTTP answer is read by the caller (only network errors raise)."""


def _reserve(limit: int) -> int:
    # Never more than a tenth of a window: a small limit (a new application's) stays usable.
    return min(max(0, int(getattr(settings, "STRAVA_RATE_LIMIT_RESERVE", 5))), limit // 10)
