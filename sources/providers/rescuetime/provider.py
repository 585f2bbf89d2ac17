from datetime import date

import requests

from ingestion.errors import PermanentError, ProviderAuthError, ProviderError, TransientError
from ingestion.http import ProviderHttp, response_check
from sources.providers.base import DAY, HOUR, MINUTE, ApiKeyProvider, Budget, Stream
from sources.providers.rescuetime.kinds import PRODUCTIVITY_DAY, PRODUCTIVITY_HOUR


class RescueTime(ApiKeyProvider):
    """Time spent on devices, from a personal RescueTime API key."""

    id = "rescuetime"
    name = "RescueTime"
    category = "behavioral"
    streams = (
        Stream("hours", kind="productivity_hour"),
        Stream("days", kind="productivity_day"),
    )
    kinds = (PRODUCTIVITY_HOUR, PRODUCTIVITY_DAY)
    urls = {"api": "https://www.rescuetime.com"}
    sandbox_paths = {"api": "/rescuetime"}
    key_help = "Create a key at rescuetime.com under Settings, API & Integrations."
    account_label = "RescueTime account"
    reauth_message = "RescueTime no longer accepts the saved key. Please enter a new one."
    # RescueTime publishes no limit (https://www.rescuetime.com/rtx/developers): this one is
    # Sibling's own, conservative, per key. A sync makes about one call per week of history.
    budgets = (Budget("key", limit=60, window_s=60),)
    # RescueTime's own apps upload every 3 minutes on paid plans and every 30 on Lite
    # (https://www.rescuetime.com/rtx/developers); a sync with nothing new costs two calls.
    # It documents no limit on how far back the API reads: Sibling's default bound holds.
    sync_interval_choices = (15 * MINUTE, 30 * MINUTE, HOUR, 6 * HOUR, DAY)
    client_path = "sources.providers.rescuetime.client.RescueTimeSyncClient"
    processor_path = "sources.providers.rescuetime.processors.page_process"

    @classmethod
    def key_check(cls, api_key: str) -> None:
        # A bad key is answered with HTTP 200 and an error body:
        # https://www.rescuetime.com/rtx/developers (and leesharma/rescuetime requester.rb).
        today = date.today().isoformat()
        # The person waits: the connect policy (one quick retry of a 5xx or a timeout).
        try:
            with ProviderHttp.for_connect(provider_name=cls.name, check=_key_check_status) as http:
                body = http.get_json(
                    f"{cls.url('api')}/anapi/data",
                    params={
                        "key": api_key,
                        "format": "json",
                        "perspective": "rank",
                        "restrict_kind": "overview",
                        "restrict_begin": today,
                        "restrict_end": today,
                    },
                )
        except ProviderError as err:
            # A cause is a network error or a body that is not JSON: nothing usable came back.
            if isinstance(err, TransientError) and err.__cause__ is not None:
                raise ProviderError("RescueTime could not be reached. Please try again.") from err
            raise ProviderError("RescueTime could not check the key. Please try again.") from err
        if isinstance(body, dict) and "error" in body:
            raise ProviderAuthError("RescueTime did not accept this key.")


def _key_check_status(response: requests.Response) -> None:
    """Anything but 200 means the key could not be checked (a bad key is a 200 with an error
    body); 5xx and 429 are retried as for a sync, never taken for a refusal of the key."""
    if response.status_code == 200:
        return
    if response.status_code >= 500 or response.status_code == 429:
        response_check(response, provider_name=RescueTime.name)
    raise PermanentError(f"RescueTime answered {response.status_code}")
