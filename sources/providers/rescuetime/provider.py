from datetime import date

import requests

from sources.providers.base import (
    HTTP_TIMEOUT_S,
    ApiKeyProvider,
    ProviderAuthError,
    ProviderError,
    Stream,
)


class RescueTime(ApiKeyProvider):
    """Time spent on devices, from a personal RescueTime API key."""

    id = "rescuetime"
    name = "RescueTime"
    category = "behavioral"
    streams = (
        Stream("hours", primary_key="hour", cursor_field="date", kind="productivity_hour"),
        Stream("days", primary_key="date", cursor_field="date", kind="productivity_day"),
    )
    urls = {"api": "https://www.rescuetime.com"}
    sandbox_paths = {"api": "/rescuetime"}
    key_help = "Create a key at rescuetime.com under Settings, API & Integrations."
    reauth_message = "RescueTime no longer accepts the saved key. Please enter a new one."
    client_path = "sources.providers.rescuetime.client.RescueTimeSyncClient"
    processor_path = "sources.providers.rescuetime.processors.page_process"

    @classmethod
    def key_check(cls, api_key: str) -> None:
        # A bad key is answered with HTTP 200 and an error body:
        # https://www.rescuetime.com/rtx/developers (and leesharma/rescuetime requester.rb).
        today = date.today().isoformat()
        try:
            response = requests.get(
                f"{cls.url('api')}/anapi/data",
                params={
                    "key": api_key,
                    "format": "json",
                    "perspective": "rank",
                    "restrict_kind": "overview",
                    "restrict_begin": today,
                    "restrict_end": today,
                },
                timeout=HTTP_TIMEOUT_S,
            )
            body = response.json()
        except (requests.RequestException, ValueError) as err:
            raise ProviderError("RescueTime could not be reached. Please try again.") from err
        if response.status_code != 200:
            raise ProviderError("RescueTime could not check the key. Please try again.")
        if isinstance(body, dict) and "error" in body:
            raise ProviderAuthError("RescueTime did not accept this key.")
