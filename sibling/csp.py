"""The Content-Security-Policy: the fixed policy in settings, plus what the providers need.

The fixed part (``CONTENT_SECURITY_POLICY`` or, with ``SIBLING_CSP_REPORT_ONLY``,
``CONTENT_SECURITY_POLICY_REPORT_ONLY``) allows only this origin, scripts only with the page's
nonce or from here, and no framing of Sibling. What the connect flows need depends on where each
provider's endpoints are configured (the real provider, a staging URL, or the built-in sandbox),
so it is derived from the provider registry on every response rather than written twice:

- A hosted link (``HostedLinkProvider``: the provider's own script opens its dialog on Sibling's
  page): the script itself in ``script-src``, its origin in ``frame-src`` (such dialogs open in
  an iframe served beside the script) and the origins of the endpoints the provider declares the
  script calls (``link_connect_urls``) in ``connect-src``. With the sandbox, the imitation's
  script and endpoints, all under ``SIBLING_SANDBOX_BASE_URL``. What a provider's script needs
  is documented in its folder (``sources/providers/<id>/provider.py``).
- OAuth2 providers: the connect button posts to ``/connect/login/<provider>/``, which redirects to
  the provider's authorize URL; browsers apply ``form-action`` to redirects after a form
  submission, so each authorize URL's origin is allowed there.
"""

from __future__ import annotations

import functools
from urllib.parse import SplitResult, urlsplit

from csp.middleware import CSPMiddleware, PolicyParts
from django.http import HttpRequest, HttpResponseBase


def _absolute(url: str) -> SplitResult | None:
    """The parts of an absolute http(s) URL; None for a relative or malformed one (a
    misconfigured provider URL is left out of the policy rather than failing every response)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return parts


def _origin(url: str) -> str:
    """``scheme://host[:port]/`` of an absolute URL; "" for a relative or malformed one."""
    parts = _absolute(url)
    return f"{parts.scheme}://{parts.netloc}/" if parts else ""


def _source(url: str) -> str:
    """An absolute URL as a CSP source expression (path kept, query and fragment dropped)."""
    parts = _absolute(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}" if parts else ""


def provider_sources() -> dict[str, list[str]]:
    """CSP sources the configured providers' pages need, per directive (deduplicated, ordered).

    Every response asks for them: they are worked out once per configuration (the settings that
    decide each provider's URLs), not once per response."""
    from django.conf import settings

    configuration = repr(
        (
            # Where each provider is reached (its credentials play no part).
            [
                (name, config["sandbox"], sorted(config["urls"].items()))
                for name, config in sorted(settings.SIBLING_PROVIDERS.items())
            ],
            settings.SIBLING_SANDBOX_ALLOWED,
            settings.SIBLING_SANDBOX_BASE_URL,
        )
    )
    return {
        directive: list(sources) for directive, sources in _provider_sources(configuration).items()
    }


@functools.lru_cache(maxsize=8)
def _provider_sources(configuration: str) -> dict[str, tuple[str, ...]]:
    from sources.providers import PROVIDERS, HostedLinkProvider, OAuth2Provider

    wanted: dict[str, list[str]] = {}

    def add(directive: str, source: str) -> None:
        if source and source not in wanted.setdefault(directive, []):
            wanted[directive].append(source)

    for provider in PROVIDERS.values():
        if issubclass(provider, HostedLinkProvider):
            script = provider.url("link_script")
            add("script-src", _source(script))
            add("frame-src", _origin(script))
            for name in provider.link_connect_urls:
                add("connect-src", _origin(provider.url(name)))
        elif issubclass(provider, OAuth2Provider):
            add("form-action", _origin(provider.url("authorize")))
    return {directive: tuple(sources) for directive, sources in wanted.items()}


class ProviderCSPMiddleware(CSPMiddleware):
    """django-csp's middleware, with the providers' sources added to whichever policy is set."""

    def get_policy_parts(
        self,
        request: HttpRequest,
        response: HttpResponseBase,
        report_only: bool = False,
    ) -> PolicyParts:
        parts = super().get_policy_parts(request, response, report_only)
        update = {
            key: [value] if isinstance(value, str) else list(value or ())
            for key, value in (parts.update or {}).items()
        }
        for directive, sources in provider_sources().items():
            update[directive] = [*update.get(directive, []), *sources]
        parts.update = update
        return parts
