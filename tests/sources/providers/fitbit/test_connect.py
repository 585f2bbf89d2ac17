"""Google Health's connect, refresh, revoke and error tests, from the OAuth2 base."""

import requests

from tests.sources.providers.google import GoogleSandboxHooks
from tests.sources.providers.kit import OAuth2ProviderTests


class TestFitbitConnect(GoogleSandboxHooks, OAuth2ProviderTests):
    provider_id = "fitbit"

    def test_the_connection_is_named_by_the_health_user_id(self, browser, person):
        connection, _ = self.connect(browser, person)
        # Google Health names the person by healthUserId, which its notifications carry.
        identity = requests.get(
            f"{self.provider.url('api')}/users/me/identity",
            headers={"Authorization": f"Bearer {connection.credentials['access_token']}"},
            timeout=30,
        ).json()
        assert connection.external_account_id == str(identity["healthUserId"])
