from typing import Any

from ingestion.errors import ProviderError
from ingestion.http import ProviderHttp
from sources.providers.base import DAY, HOUR, MINUTE, Budget, Setting, Stream
from sources.providers.google import GOOGLE_SANDBOX_PATHS, GOOGLE_URLS, GoogleProvider
from sources.providers.google_http import google_check
from sources.providers.kinds import ACTIVITY_DAY, HEART_RATE_DAY, SLEEP_SESSION

SCOPE_PREFIX = "https://www.googleapis.com/auth/googlehealth."
API_NAME = "The Google Health API"


class Fitbit(GoogleProvider):
    """Fitbit data through the Google Health API (the legacy Fitbit Web API was switched off
    in 2026: https://developers.google.com/health/migration)."""

    id = "fitbit"
    name = "Fitbit"
    category = "behavioral"
    scopes = (
        f"{SCOPE_PREFIX}activity_and_fitness.readonly",
        f"{SCOPE_PREFIX}sleep.readonly",
        f"{SCOPE_PREFIX}health_metrics_and_measurements.readonly",
    )
    # How Google's consent screen names them, for a connect that lacks one.
    scope_descriptions = {
        f"{SCOPE_PREFIX}activity_and_fitness.readonly": "See your activity and fitness data",
        f"{SCOPE_PREFIX}sleep.readonly": "See your sleep data",
        f"{SCOPE_PREFIX}health_metrics_and_measurements.readonly": (
            "See your health metrics and measurements"
        ),
    }
    streams = (
        Stream("steps", kind="activity_day"),
        Stream("sleep", kind="sleep_session"),
        Stream("heart-rate", kind="heart_rate_day"),
    )
    kinds = (ACTIVITY_DAY, SLEEP_SESSION, HEART_RATE_DAY)
    credentials = {"client_id": "sandbox-fitbit-client", "client_secret": "sandbox-fitbit-secret"}
    settings = (
        # The Google Health API subscriber's secret (sent in Authorization).
        Setting("webhook_secret", sandbox_default="Bearer sandbox-health-webhook-secret"),
        # The public keyset of notification signatures (url "webhook_keyset") is used this
        # long, then fetched again: keys rotate, and a disabled key must stop verifying.
        Setting("webhook_keyset_cache_s", default=3600, cast=int),
        # Notifications carry no id: identical ones within this window are one delivery.
        Setting("webhook_dedup_window_s", default=600, cast=int),
    )
    urls = {
        **GOOGLE_URLS,
        "api": "https://health.googleapis.com/v4",
        # Google's Tink JSON keyset of notification signing keys:
        # https://developers.google.com/health/webhooks#how_to_verify_the_signature
        "webhook_keyset": (
            "https://www.gstatic.com/googlehealthapi/webhooks/webhooks_public_keyset.json"
        ),
    }
    # https://developers.google.com/health/rate-limits: requests per user and per project.
    budgets = (
        Budget("user", limit=300, window_s=60),
        Budget("project", limit=120_000, window_s=60, per="app"),
    )
    # Notifications name the days that changed as trackers upload; a scheduled sync re-reads
    # the last two days, a few calls of the 300 a minute a person has.
    sync_interval_choices = (15 * MINUTE, HOUR, 6 * HOUR, DAY)
    # The API documents no limit on how far back data may be read: Sibling's default bound
    # (a year of daily windows) holds.
    client_path = "sources.providers.fitbit.client.FitbitSyncClient"
    processor_path = "sources.providers.fitbit.processors.page_process"
    webhook_handler_path = "sources.providers.fitbit.webhooks.event_handle"
    webhook_receiver_path = "sources.providers.fitbit.webhooks.FitbitWebhookReceiver"
    sandbox_paths = {
        **GOOGLE_SANDBOX_PATHS,
        "api": "/google/health/v4",
        "webhook_keyset": "/google/health/webhooks/webhooks_public_keyset.json",
    }

    @classmethod
    def external_account_id(cls, *, uid: str, credentials: dict[str, Any]) -> str:
        # Webhook notifications name the person by healthUserId, not by the Google account id:
        # https://developers.google.com/health/reference/rest/v4/users/getIdentity
        # The person waits on the connect: the connect policy (one quick retry), Google's error
        # mapping; a refused token is ReauthRequired, any failure a ProviderError.
        with ProviderHttp.for_connect(
            provider_name=API_NAME,
            check=lambda r: google_check(r, provider_name=API_NAME),
            bearer=lambda: credentials["access_token"],
        ) as http:
            body = http.get_json(f"{cls.url('api')}/users/me/identity")
        health_user_id = body.get("healthUserId") if isinstance(body, dict) else None
        if not isinstance(health_user_id, str | int) or not str(health_user_id):
            raise ProviderError("The Google Health API did not tell which account this is")
        return str(health_user_id)
