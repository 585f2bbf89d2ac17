"""The social-auth backends of the registered OAuth2 providers, by id.

``sources.providers.backends.<id>`` is the backend of provider ``<id>`` (built by
``OAuth2Provider.backend()``): the dotted path social-auth and Django's AUTHENTICATION_BACKENDS
import, so no provider needs a module of its own for its backend.
"""

from __future__ import annotations


def __getattr__(name: str) -> type:
    if name.startswith("__"):  # import machinery and tools probe dunder names
        raise AttributeError(name)
    from sources.providers import OAuth2Provider, ProviderNotFound, get_provider

    try:
        provider = get_provider(name)
    except ProviderNotFound:
        raise AttributeError(f"no registered provider {name!r}") from None
    if not issubclass(provider, OAuth2Provider):
        raise AttributeError(f"provider {name!r} does not connect with OAuth2")
    return provider.backend()
