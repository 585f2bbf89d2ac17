"""The provider registry: an explicit list, looked up by id."""

from __future__ import annotations

from sources.providers.base import (
    ApiKeyProvider,
    OAuth2Provider,
    PlaidLinkProvider,
    Provider,
    ProviderAuthError,
    ProviderError,
    Stream,
)
from sources.providers.fitbit import Fitbit
from sources.providers.gmail import Gmail
from sources.providers.plaid import Plaid
from sources.providers.rescuetime import RescueTime

PROVIDERS: dict[str, type[Provider]] = {p.id: p for p in (Gmail, Plaid, Fitbit, RescueTime)}


class ProviderNotFound(LookupError):
    pass


def get_provider(provider_id: str) -> type[Provider]:
    try:
        return PROVIDERS[provider_id]
    except KeyError:
        raise ProviderNotFound(provider_id) from None


def provider_choices() -> list[tuple[str, str]]:
    return [(p.id, p.name) for p in PROVIDERS.values()]


__all__ = [
    "PROVIDERS",
    "ApiKeyProvider",
    "OAuth2Provider",
    "PlaidLinkProvider",
    "Provider",
    "ProviderAuthError",
    "ProviderError",
    "ProviderNotFound",
    "Stream",
    "get_provider",
    "provider_choices",
]
