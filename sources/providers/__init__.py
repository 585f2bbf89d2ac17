"""The provider registry: an explicit list of declarations, looked up by id.

A provider is its package ``sources/providers/<id>/`` plus one line in ``REGISTRY``. Settings,
auth backends, webhook routes, record kinds, periodic work and signals are all built from the
declarations listed here (see ``sources.providers.base.Provider``), so nothing else in the
project names a provider.
"""

from __future__ import annotations

from django.utils.module_loading import import_string

from sources.providers.base import (
    ApiKeyProvider,
    HostedLinkProvider,
    OAuth2Provider,
    Periodic,
    Provider,
    ProviderAuthError,
    ProviderError,
    Setting,
    Stream,
)

# The registry: one line per provider (its declaration class). Nothing else names providers.
REGISTRY: tuple[str, ...] = (
    "sources.providers.gmail.provider.Gmail",
    "sources.providers.plaid.provider.Plaid",
    "sources.providers.fitbit.provider.Fitbit",
    "sources.providers.rescuetime.provider.RescueTime",
    "sources.providers.google_calendar.provider.GoogleCalendar",
    "sources.providers.strava.provider.Strava",
)


class ProviderNotFound(LookupError):
    pass


def _providers_load(paths: tuple[str, ...]) -> dict[str, type[Provider]]:
    providers: dict[str, type[Provider]] = {}
    for path in paths:
        provider = import_string(path)
        if provider.id in providers:
            raise ValueError(f"two providers in the registry have the id {provider.id!r}")
        providers[provider.id] = provider
    return providers


PROVIDERS: dict[str, type[Provider]] = _providers_load(REGISTRY)


def get_provider(provider_id: str) -> type[Provider]:
    try:
        return PROVIDERS[provider_id]
    except (KeyError, TypeError):  # TypeError: an unhashable value from a request
        raise ProviderNotFound(provider_id) from None


def providers_with(auth_mode: str | None = None) -> list[type[Provider]]:
    """The registered providers, in registry order; only those of ``auth_mode`` when given."""
    return [p for p in PROVIDERS.values() if auth_mode is None or p.auth_mode == auth_mode]


__all__ = [
    "PROVIDERS",
    "REGISTRY",
    "ApiKeyProvider",
    "HostedLinkProvider",
    "OAuth2Provider",
    "Periodic",
    "Provider",
    "ProviderAuthError",
    "ProviderError",
    "ProviderNotFound",
    "Setting",
    "Stream",
    "get_provider",
    "providers_with",
]
