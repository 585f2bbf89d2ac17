"""Strava: a person's activities (runs, rides, swims...) as workouts, through Strava's own OAuth2.

https://developers.strava.com/docs/authentication/ and https://developers.strava.com/docs/
(rate limits, webhooks). Access tokens last six hours; every refresh may return a new refresh
token and the one used stops working (sources.providers tokens are saved before use). The rate
limits are per application, shared by every athlete (see client.py).
"""

from __future__ import annotations

from typing import Any

import requests

from ingestion.http import CallCounter, ProviderHttp, RetryPolicy
from sources.providers.base import (
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
        # Calls left unspent in each rate-limit window (15 minutes, day) for what is not a sync:
        # the budget is the application's, shared by every athlete and worker.
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
    # Strava asks again for consent only when told to: a reconnect then shows the scopes again.
    auth_extra_arguments = {"approval_prompt": "force"}
    reauth_message = "Strava asks you to connect your account again."
    default_sync_interval_s = 6 * 3600
    client_path = "sources.providers.strava.client.StravaSyncClient"
    processor_path = "sources.providers.strava.processors.page_process"
    webhook_receiver_path = "sources.providers.strava.webhooks.StravaWebhookReceiver"
    webhook_handler_path = "sources.providers.strava.webhooks.event_handle"
    backend_base = StravaBackend

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
