"""The registry drives the wiring: every registered provider gets its backend, routes, kinds,
periodic work and signals from its declaration alone. No provider is named here: each test runs
over the registry."""

import sys

import pytest
from django.conf import settings as django_settings
from django.urls import NoReverseMatch, resolve, reverse
from django.utils.module_loading import import_string
from social_core.backends.utils import load_backends

from ingestion.schemas import kind_get, kinds_all
from sources.checks import declaration_errors
from sources.providers import (
    PROVIDERS,
    REGISTRY,
    ApiKeyProvider,
    HostedLinkProvider,
    OAuth2Provider,
    ProviderNotFound,
    get_provider,
    providers_with,
)
from sources.providers import backends as provider_backends
from sources.providers.base import AUTH_MODES, CATEGORIES, Provider

BASES = {"oauth2": OAuth2Provider, "api_key": ApiKeyProvider, "hosted_link": HostedLinkProvider}
ALL = list(PROVIDERS.values())
OAUTH2 = providers_with("oauth2")


def provider_ids(providers: list[type[Provider]]) -> list[str]:
    return [p.id for p in providers]


def test_the_registry_lists_declarations_once_each_in_order():
    assert [import_string(path) for path in REGISTRY] == ALL
    assert len(set(PROVIDERS)) == len(REGISTRY)
    for provider_id, provider in PROVIDERS.items():
        assert provider.id == provider_id
        assert get_provider(provider_id) is provider


@pytest.mark.parametrize("provider", ALL, ids=provider_ids(ALL))
def test_each_declaration_is_complete(provider):
    assert provider.name and provider.streams
    assert provider.category in CATEGORIES
    assert provider.auth_mode in AUTH_MODES
    assert issubclass(provider, BASES[provider.auth_mode])
    kinds = {kind.name for kind in provider.kinds}
    assert {stream.kind for stream in provider.streams} <= kinds
    assert set(provider.sandbox_paths) == set(provider.urls)
    assert all(url.startswith("https://") for url in provider.urls.values())
    # The system check finds nothing (the sandbox module aside, which development requires).
    assert declaration_errors(provider, sandbox_allowed=False) == []


def test_providers_with_an_auth_mode():
    assert providers_with() == ALL
    for mode in AUTH_MODES:
        assert providers_with(mode) == [p for p in ALL if p.auth_mode == mode]


@pytest.mark.parametrize("unknown", ["myspace", "", None, ["x"]])
def test_an_unknown_provider_is_not_found(unknown):
    with pytest.raises(ProviderNotFound):
        get_provider(unknown)
    for provider_id in PROVIDERS:  # ids are exact: no case folding, no trimming
        with pytest.raises(ProviderNotFound):
            get_provider(f"{provider_id.upper()} ")


@pytest.mark.parametrize("provider", OAUTH2, ids=provider_ids(OAUTH2))
def test_each_oauth2_provider_has_a_backend_by_its_id(provider):
    backend = provider.backend()
    assert backend is provider.backend()  # built once
    assert issubclass(backend, provider.backend_base)
    assert backend.name == provider.id and backend.provider is provider
    path = f"sources.providers.backends.{provider.id}"
    assert import_string(path) is backend
    # Django and social-auth derive a backend's path from its class (a session's backend, say).
    assert f"{backend.__module__}.{backend.__qualname__}" == path
    assert path in django_settings.AUTHENTICATION_BACKENDS
    assert (
        load_backends(django_settings.AUTHENTICATION_BACKENDS, force_load=True)[provider.id]
        is backend
    )


@pytest.mark.parametrize("provider", OAUTH2, ids=provider_ids(OAUTH2))
def test_a_backend_takes_its_endpoints_credentials_and_scopes_from_the_provider(provider):
    instance = provider.backend()()
    assert instance.authorization_url() == provider.url("authorize")
    assert instance.access_token_url() == provider.url("token")
    credentials = provider.client_credentials()
    assert instance.get_key_and_secret() == (credentials["client_id"], credentials["client_secret"])
    assert set(provider.scopes) <= set(instance.get_scope())
    extra = instance.auth_extra_arguments()
    assert {k: extra[k] for k in provider.auth_extra_arguments} == provider.auth_extra_arguments
    # Tokens never reach social_django's extra_data.
    assert not {"access_token", "refresh_token"} & set(
        instance.extra_data(None, "uid", {"access_token": "a", "refresh_token": "r"}, {}, {})
    )


def test_the_backends_module_names_only_oauth2_providers():
    with pytest.raises(AttributeError):
        provider_backends.myspace  # noqa: B018
    for provider in ALL:
        if not issubclass(provider, OAuth2Provider):
            with pytest.raises(AttributeError):
                getattr(provider_backends, provider.id)
    oauth2_paths = [b for b in django_settings.AUTHENTICATION_BACKENDS if "providers" in b]
    assert oauth2_paths == [f"sources.providers.backends.{p.id}" for p in OAUTH2]


def test_a_declared_receiver_is_routed_at_webhooks_id():
    for provider in ALL:
        if provider.webhook_receiver_path:
            url = reverse(f"webhook_{provider.id}")
            assert url == f"/webhooks/{provider.id}/"
            view = resolve(url).func
            assert view.view_class is import_string(provider.webhook_receiver_path)
        else:
            with pytest.raises(NoReverseMatch):
                reverse(f"webhook_{provider.id}")


def test_declared_kinds_are_in_the_schema_registry():
    registered = {kind.name for kind in kinds_all()}
    for provider in ALL:
        for kind in provider.kinds:
            assert kind.name in registered
            assert kind_get(kind.name) == kind


@pytest.mark.django_db
def test_declared_periodic_work_is_scheduled_after_migrate():
    from django_q.models import Schedule

    for provider in ALL:
        for work in provider.periodic:
            schedule = Schedule.objects.get(name=work.name)
            assert (schedule.func, schedule.minutes) == (work.func, work.minutes)


def test_a_provider_signals_module_is_imported_at_startup():
    import importlib.util

    for provider in ALL:
        module = f"{provider.__module__.rsplit('.', 1)[0]}.signals"
        if importlib.util.find_spec(module) is not None:
            assert module in sys.modules


def test_urls_come_from_settings_the_sandbox_or_the_real_provider(settings):
    settings.SIBLING_SANDBOX_BASE_URL = "http://127.0.0.1:9/sandbox"
    for provider in ALL:
        name = next(iter(provider.urls))
        assert provider.url(name) == "http://127.0.0.1:9/sandbox" + provider.sandbox_paths[name]

        settings.SIBLING_PROVIDERS = {
            **settings.SIBLING_PROVIDERS,
            provider.id: {**settings.SIBLING_PROVIDERS[provider.id], "sandbox": False},
        }
        assert provider.url(name) == provider.urls[name]

        settings.SIBLING_PROVIDERS = {
            **settings.SIBLING_PROVIDERS,
            provider.id: {
                **settings.SIBLING_PROVIDERS[provider.id],
                "urls": {name: "https://staging.example.com/x"},
            },
        }
        assert provider.url(name) == "https://staging.example.com/x"


def test_sandbox_cannot_be_enabled_without_debug(settings):
    settings.SIBLING_SANDBOX_ALLOWED = False
    assert not any(provider.sandboxed() for provider in ALL)
    for provider in ALL:
        if not settings.SIBLING_PROVIDERS[provider.id]["urls"].get("api"):
            assert all(provider.url(name) == url for name, url in provider.urls.items())


@pytest.mark.parametrize("provider", ALL, ids=provider_ids(ALL))
def test_secrets_are_declared_so_every_layer_can_hide_them(provider):
    assert provider.secret_fields
    credentials = {field: "s3cret" for field in provider.secret_fields} | {"scope": "s"}
    redacted = provider.credentials_redacted(credentials)
    assert redacted == {field: "[secret]" for field in provider.secret_fields} | {"scope": "s"}
