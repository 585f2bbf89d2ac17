"""System checks of the provider declarations: an incomplete one stops the process at startup.

Every registered provider (sources.providers.REGISTRY) is checked for what the wiring built from
it needs: id, name, category and auth mode; a working social-auth backend for an OAuth2
provider, with its authorize and token endpoints; a hosted link's script and the endpoints it
calls; streams whose kinds it declares, with the category of its collection; importable
client, processor, webhook handler, webhook receiver and periodic functions; the same endpoint
names real and sandboxed; and, where the sandbox is allowed (development), a sandbox module.
``declaration_errors`` checks one declaration and is what the tests call.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, register
from django.utils.module_loading import import_string

from sources.providers.base import (
    AUTH_MODES,
    CATEGORIES,
    HostedLinkProvider,
    OAuth2Provider,
    Provider,
)

# sibling.E001 and E002 are the deploy checks of sibling.checks.
E_MISSING = "sibling.E010"  # id, name, category or auth_mode missing
E_CATEGORY = "sibling.E011"  # unknown category
E_AUTH_MODE = "sibling.E012"  # unknown auth mode
E_BACKEND = "sibling.E013"  # an OAuth2 provider without a working backend
E_STREAM_KIND = "sibling.E014"  # a stream whose kind the provider does not declare
E_KIND_CATEGORY = "sibling.E015"  # a kind of another category than the provider's collection
E_PATH = "sibling.E016"  # a declared dotted path that does not import
E_PERIODIC = "sibling.E017"  # a periodic function that does not import
E_URLS = "sibling.E018"  # urls and sandbox_paths name different endpoints
E_SANDBOX = "sibling.E019"  # no sandbox module while the sandbox is allowed
E_DUPLICATE_KIND = "sibling.E020"  # two providers declare one kind name differently
E_LINK_URLS = "sibling.E021"  # a hosted link's script or called endpoints not declared
E_BUDGET = "sibling.E022"  # a budget that cannot be charged as declared
BUDGET_SCOPES = ("account", "app")

# What every OAuth2 backend calls: the consent redirect and the code exchange.
OAUTH2_URLS = ("authorize", "token")

PATH_ATTRIBUTES = ("client_path", "processor_path", "webhook_handler_path", "webhook_receiver_path")


def _label(provider: type[Provider]) -> str:
    return getattr(provider, "id", None) or f"{provider.__module__}.{provider.__name__}"


def _imports(path: str) -> bool:
    try:
        import_string(path)
    except Exception:  # ImportError, a missing attribute, or an error in the module itself
        return False
    return True


def _sandbox_module(provider: type[Provider]) -> str:
    return f"{provider.__module__.rsplit('.', 1)[0]}.sandbox"


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def declaration_errors(
    provider: type[Provider], *, sandbox_allowed: bool | None = None
) -> list[CheckMessage]:
    """What is wrong with one provider's declaration (an empty list when nothing is)."""
    if sandbox_allowed is None:
        sandbox_allowed = bool(getattr(settings, "SIBLING_SANDBOX_ALLOWED", False))
    label = _label(provider)
    errors: list[CheckMessage] = []

    def error(message: str, id: str, hint: str | None = None) -> None:
        errors.append(Error(f"Provider {label}: {message}", hint=hint, obj=provider, id=id))

    for attribute in ("id", "name", "category", "auth_mode"):
        if not getattr(provider, attribute, None):
            error(f"declares no {attribute}.", E_MISSING)
    category = getattr(provider, "category", None)
    if category and category not in CATEGORIES:
        error(
            f"unknown category {category!r}.", E_CATEGORY, hint=f"One of {', '.join(CATEGORIES)}."
        )
    auth_mode = getattr(provider, "auth_mode", None)
    if auth_mode and auth_mode not in AUTH_MODES:
        error(
            f"unknown auth mode {auth_mode!r}.",
            E_AUTH_MODE,
            hint=f"One of {', '.join(AUTH_MODES)}.",
        )

    if issubclass(provider, OAuth2Provider) and getattr(provider, "id", None):
        try:
            backend = provider.backend()
            works = bool(getattr(backend, "name", "")) and callable(
                getattr(backend, "auth_url", None)
            )
        except Exception as err:
            works = False
            error(f"its OAuth2 backend cannot be built ({type(err).__name__}).", E_BACKEND)
        else:
            if not works:
                error(
                    "its OAuth2 backend has no name or is not a social-auth backend.",
                    E_BACKEND,
                    hint="backend_base must be a social-core OAuth2 backend class.",
                )
            elif missing := [u for u in OAUTH2_URLS if u not in provider.urls]:
                # The backend's redirect and exchange (and the pages' CSP) read these.
                error(
                    f"its OAuth2 backend has no {', '.join(missing)} endpoint.",
                    E_BACKEND,
                    hint="Declare them in `urls` and `sandbox_paths`.",
                )
    if issubclass(provider, HostedLinkProvider):
        # The connect page loads the script, and its CSP allows what the script calls.
        if missing := [
            u for u in ("link_script", *provider.link_connect_urls) if u not in provider.urls
        ]:
            error(
                f"its hosted link names endpoints it does not declare ({', '.join(missing)}).",
                E_LINK_URLS,
                hint="Declare link_script and every link_connect_urls name in `urls`.",
            )

    kinds = {kind.name: kind for kind in provider.kinds}
    for stream in provider.streams:
        if stream.kind not in kinds:
            error(
                f"stream {stream.name!r} has kind {stream.kind!r}, not one of its kinds.",
                E_STREAM_KIND,
                hint="Add the Kind to the provider's `kinds`.",
            )
    for kind in provider.kinds:
        if category in CATEGORIES and kind.category != category:
            error(
                f"kind {kind.name!r} is {kind.category}, but the provider's records are "
                f"{category}.",
                E_KIND_CATEGORY,
            )

    for attribute in PATH_ATTRIBUTES:
        path = getattr(provider, attribute, "")
        if path and not _imports(path):
            error(f"{attribute} {path!r} does not import.", E_PATH)
    for work in provider.periodic:
        if not _imports(work.func):
            error(f"periodic {work.name!r}: {work.func!r} does not import.", E_PERIODIC)

    seen: set[str] = set()
    for budget in provider.budgets:
        # Its name makes the <ID>_BUDGET_<NAME> setting and its buckets' keys.
        if not budget.name.isidentifier() or budget.name in seen:
            error(f"budget {budget.name!r} needs a unique identifier as its name.", E_BUDGET)
        seen.add(budget.name)
        if budget.per not in BUDGET_SCOPES:
            error(
                f"budget {budget.name!r} is per {budget.per!r}.",
                E_BUDGET,
                hint=f"One of {', '.join(BUDGET_SCOPES)}.",
            )
        costs = (budget.default_cost, *budget.costs.values())
        if budget.limit <= 0 or budget.window_s <= 0 or min(costs) < 0:
            error(
                f"budget {budget.name!r} needs a positive limit and window and no negative cost.",
                E_BUDGET,
            )

    if set(provider.urls) != set(provider.sandbox_paths):
        differ = sorted(set(provider.urls) ^ set(provider.sandbox_paths))
        error(
            f"urls and sandbox_paths name different endpoints ({', '.join(differ)}).",
            E_URLS,
            hint="Every endpoint needs a real URL and a sandbox path.",
        )

    if sandbox_allowed and not _has_module(_sandbox_module(provider)):
        error(
            f"no sandbox imitation ({_sandbox_module(provider)}).",
            E_SANDBOX,
            hint="Development talks to the sandbox; write the provider's sandbox.py.",
        )
    return errors


def kind_conflicts(providers: Iterable[type[Provider]]) -> list[CheckMessage]:
    """Kind names two providers declare as different kinds, or a provider declares as another
    kind than the events API's own of that name (one of them would be lost)."""
    from ingestion.schemas import kinds_all

    registered = {kind.name: kind for kind in kinds_all()}
    seen: dict[str, tuple[Any, type[Provider]]] = {}
    errors: list[CheckMessage] = []
    for provider in providers:
        for kind in provider.kinds:
            if registered.get(kind.name, kind) != kind and kind.name not in seen:
                errors.append(
                    Error(
                        f"Provider {_label(provider)} declares a kind named {kind.name!r} "
                        "that is already a different registered kind.",
                        hint="Name the kind differently, or reuse the registered one.",
                        obj=provider,
                        id=E_DUPLICATE_KIND,
                    )
                )
            first = seen.setdefault(kind.name, (kind, provider))
            if first[0] != kind:
                errors.append(
                    Error(
                        f"Providers {_label(first[1])} and {_label(provider)} declare different "
                        f"kinds named {kind.name!r}.",
                        hint="Declare a shared kind once, in sources/providers/kinds.py.",
                        obj=provider,
                        id=E_DUPLICATE_KIND,
                    )
                )
    return errors


@register()
def provider_declarations_check(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Every registered provider's declaration is complete."""
    from sources.providers import PROVIDERS

    errors: list[CheckMessage] = []
    for provider in PROVIDERS.values():
        errors.extend(declaration_errors(provider))
    errors.extend(kind_conflicts(PROVIDERS.values()))
    return errors
