from typing import Any

import requests

from sources.providers.base import HTTP_TIMEOUT_S, ProviderError, Stream
from sources.providers.google import GOOGLE_SANDBOX_PATHS, GOOGLE_URLS, GoogleProvider

SCOPE_PREFIX = "https://www.googleapis.com/auth/googlehealth."


class Fitbit(GoogleProvider):
    """Fitbit data through the Google Health API (the legacy Fitbit Web API was switched off
    in 2026: https://developers.google.com/health/migration)."""

    id = "fitbit"
    name = "Fitbit"
    category = "behavioral"
    backend_path = "sources.providers.fitbit.auth.FitbitOAuth2"
    scopes = (
        f"{SCOPE_PREFIX}activity_and_fitness.readonly",
        f"{SCOPE_PREFIX}sleep.readonly",
        f"{SCOPE_PREFIX}health_metrics_and_measurements.readonly",
    )
    streams = (
        Stream("steps", primary_key="date", cursor_field="interval.end_time", kind="activity_day"),
        Stream("sleep", primary_key="name", cursor_field="interval.end_time", kind="sleep_session"),
        Stream("heart-rate", primary_key="date", cursor_field="sample_time", kind="heart_rate_day"),
    )
    urls = {**GOOGLE_URLS, "api": "https://health.googleapis.com/v4"}
    client_path = "sources.providers.fitbit.client.FitbitSyncClient"
    processor_path = "sources.providers.fitbit.processors.page_process"
    webhook_handler_path = "sources.providers.fitbit.webhooks.event_handle"
    sandbox_paths = {**GOOGLE_SANDBOX_PATHS, "api": "/google/health/v4"}

    @classmethod
    def external_account_id(cls, *, uid: str, credentials: dict[str, Any]) -> str:
        # Webhook notifications name the person by healthUserId, not by the Google account id:
        # https://developers.google.com/health/reference/rest/v4/users/getIdentity
        try:
            response = requests.get(
                f"{cls.url('api')}/users/me/identity",
                headers={"Authorization": f"Bearer {credentials['access_token']}"},
                timeout=HTTP_TIMEOUT_S,
            )
            response.raise_for_status()
            return str(response.json()["healthUserId"])
        except (requests.RequestException, KeyError, ValueError) as err:
            raise ProviderError("The Google Health API did not tell which account this is") from err
