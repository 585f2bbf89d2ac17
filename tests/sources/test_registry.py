import pytest

from sources.providers import (
    PROVIDERS,
    ApiKeyProvider,
    OAuth2Provider,
    PlaidLinkProvider,
    ProviderNotFound,
    get_provider,
)
from sources.providers.fitbit import Fitbit
from sources.providers.gmail import Gmail
from sources.providers.plaid import Plaid
from sources.providers.rescuetime import RescueTime


def test_the_four_sources_and_their_auth_modes():
    assert list(PROVIDERS) == ["gmail", "plaid", "fitbit", "rescuetime"]
    assert issubclass(Gmail, OAuth2Provider) and issubclass(Fitbit, OAuth2Provider)
    assert issubclass(Plaid, PlaidLinkProvider)
    assert issubclass(RescueTime, ApiKeyProvider)
    assert {p.category for p in PROVIDERS.values()} == {"external", "behavioral"}


def test_declarations_are_complete():
    for provider in PROVIDERS.values():
        assert provider.name and provider.streams
        for stream in provider.streams:
            assert stream.primary_key and stream.cursor_field and stream.kind
        assert set(provider.sandbox_paths) == set(provider.urls)
        assert all(url.startswith("https://") for url in provider.urls.values())
    assert Gmail.scopes == ("https://www.googleapis.com/auth/gmail.readonly",)
    assert Gmail.auth_extra_arguments == {"access_type": "offline", "prompt": "consent"}
    assert all(".readonly" in scope for scope in Fitbit.scopes)
    assert {"activity_and_fitness", "sleep", "health_metrics_and_measurements"} == {
        scope.rsplit(".", 2)[-2] for scope in Fitbit.scopes
    }


def test_unknown_provider():
    with pytest.raises(ProviderNotFound):
        get_provider("myspace")
    assert get_provider("plaid") is Plaid


def test_urls_come_from_settings_the_sandbox_or_the_real_provider(settings):
    settings.SIBLING_SANDBOX_BASE_URL = "http://127.0.0.1:9/sandbox"
    assert Gmail.url("token") == "http://127.0.0.1:9/sandbox/google/token"
    assert Plaid.url("api") == "http://127.0.0.1:9/sandbox/plaid"

    settings.SIBLING_PROVIDERS = {
        **settings.SIBLING_PROVIDERS,
        "gmail": {**settings.SIBLING_PROVIDERS["gmail"], "sandbox": False},
        "plaid": {
            **settings.SIBLING_PROVIDERS["plaid"],
            "urls": {"api": "https://sandbox.plaid.com", "link_script": ""},
        },
    }
    assert Gmail.url("token") == "https://oauth2.googleapis.com/token"
    assert Gmail.url("api") == "https://gmail.googleapis.com/gmail/v1"
    assert Plaid.url("api") == "https://sandbox.plaid.com"


def test_sandbox_cannot_be_enabled_without_debug(settings):
    settings.SIBLING_SANDBOX_ALLOWED = False
    assert not any(provider.sandboxed() for provider in PROVIDERS.values())
    assert RescueTime.url("api") == "https://www.rescuetime.com"


def test_secrets_are_declared_so_every_layer_can_hide_them():
    redacted = Gmail.credentials_redacted({"access_token": "a", "refresh_token": "r", "scope": "s"})
    assert redacted == {"access_token": "[secret]", "refresh_token": "[secret]", "scope": "s"}
    assert RescueTime.credentials_redacted({"api_key": "k"}) == {"api_key": "[secret]"}
