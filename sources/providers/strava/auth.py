"""Strava's OAuth2 for social-auth: social-core's StravaOAuth with every endpoint from the
provider's declaration (sources.providers.oauth2.ProviderBackendMixin).

Strava names the athlete in the token exchange's answer (``athlete``), so connecting costs no
API call (the rate limits are the application's). The scopes the person accepted come back on
the redirect, comma-separated, not in the token answer: they are handed on space-separated,
as the pipeline reads every provider's ``scope``.
"""

from __future__ import annotations

from typing import Any

from social_core.backends.strava import StravaOAuth
from social_core.exceptions import AuthException

from sources.providers.oauth2 import ProviderBackendMixin


class StravaBackend(ProviderBackendMixin, StravaOAuth):
    # social-core's default scope would ask for "read" as well; the declaration says it all.
    DEFAULT_SCOPE: list[str] = []

    def request_access_token(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        response = super().request_access_token(*args, **kwargs)
        if isinstance(response, dict) and "scope" not in response:
            accepted = str(self.data.get("scope") or "")
            response["scope"] = " ".join(s for s in accepted.split(",") if s)
        return response

    def get_user_id(self, details: dict[str, Any], response: dict[str, Any]) -> str:
        athlete = response.get("athlete")
        if not isinstance(athlete, dict) or athlete.get("id") in (None, ""):
            raise AuthException(self, "Strava did not say which athlete this is")
        return str(athlete["id"])

    def get_user_details(self, response: dict[str, Any]) -> dict[str, Any]:
        # Accounts are connected, never used to sign in: only what names the athlete on the
        # Connections page (Strava shares no email address).
        athlete = response.get("athlete")
        if not isinstance(athlete, dict):
            athlete = {}
        return {
            "username": athlete.get("username") or "",
            "email": "",
            "first_name": athlete.get("firstname") or "",
            "last_name": athlete.get("lastname") or "",
        }

    def user_data(self, access_token: str, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        # The exchange's answer already holds the athlete (``response`` here); the API is asked
        # only when it does not.
        response = kwargs.get("response") or {}
        if isinstance(response.get("athlete"), dict):
            return {}
        athlete = self.get_json(
            f"{self.provider.url('api')}/athlete",
            headers={"Authorization": f"Bearer {access_token}"},
        )
        return {"athlete": athlete}
