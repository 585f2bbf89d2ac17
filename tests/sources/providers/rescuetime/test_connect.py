"""RescueTime's connect, key check and disconnect tests, from the API-key base."""

from tests.sources.providers.kit import ApiKeyProviderTests


class TestRescueTimeConnect(ApiKeyProviderTests):
    provider_id = "rescuetime"
