"""Google Calendar's connect, refresh, revoke and error tests, from the OAuth2 base."""

from tests.sources.providers.google import GoogleSandboxHooks
from tests.sources.providers.kit import OAuth2ProviderTests


class TestGoogleCalendarConnect(GoogleSandboxHooks, OAuth2ProviderTests):
    provider_id = "google_calendar"
