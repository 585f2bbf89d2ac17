"""Which imitations the sandbox runs: one module per registered provider, found from the registry.

A provider's imitation is the module `sandbox` beside its declaration (`sources/providers/<id>/
sandbox.py`, or a package). Only the sandbox imports it; the provider's production modules never
do. What the sandbox reads from it, all optional but `urlpatterns`:

- `urlpatterns`: its API, relative to the sandbox root (the paths its `sandbox_paths` name);
- `webhook_controls`: {action: control(body, receiver_url) -> dict}, the actions of
  `POST /sandbox/_webhooks` for this provider;
- `fault_names`: the faults it honours beyond the shared ones;
- `fault_apply(account, fault, count) -> bool`: applies a fault at once (True), else the fault
  is stored and consumed by the imitation's calls; `fault_undo(account, fault | None)`: undoes
  what `fault_clear` can undo;
- `scope_words`: {scope: plain words} for the Google consent page;
- `quotas`: its limits as the provider enforces them (`sources.sandbox.quotas.Quota`: name,
  per account or app, limit, window, aligned or sliding, cost per route, the provider's own
  over-limit answer), a sequence or a function returning one; with `quota_caller(request) ->
  QuotaCaller | None`, whose account and application a request spends. Every route of the
  module is wrapped with them and with the injected latency (sources.sandbox.urls).

A family is a set of providers that share accounts at the sandbox: every Google provider signs
in at the one Google OAuth imitation, so faults address the Google account ("google"), and the
family's own module (sources.sandbox.google) answers the faults they share.
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

from django.utils.module_loading import import_string

from sources import providers
from sources.providers import Provider

# family -> (base class of its providers, module with the family's fault hooks)
FAMILIES: dict[str, tuple[str, str]] = {
    "google": ("sources.providers.google.GoogleProvider", "sources.sandbox.google"),
}


def sandbox_module_name(provider: type[Provider]) -> str:
    """`sources.providers.<id>.sandbox` for a provider declared in `sources.providers.<id>.*`."""
    return provider.__module__.rsplit(".", 1)[0] + ".sandbox"


def sandbox_module(provider: type[Provider]) -> ModuleType | None:
    """The provider's imitation, or None when it has none."""
    name = sandbox_module_name(provider)
    try:
        return import_module(name)
    except ModuleNotFoundError as err:
        if err.name == name:
            return None
        raise


def sandbox_modules() -> dict[str, ModuleType]:
    """{provider id: imitation module} for every registered provider that has one."""
    modules = {}
    for provider_id, provider in providers.PROVIDERS.items():
        module = sandbox_module(provider)
        if module is not None:
            modules[provider_id] = module
    return modules


def family_of(provider_id: str) -> str | None:
    provider = providers.PROVIDERS.get(provider_id)
    if provider is None:
        return None
    for family, (base_path, _) in FAMILIES.items():
        if issubclass(provider, import_string(base_path)):
            return family
    return None


def namespace(name: str) -> str:
    """Where an account lives at the sandbox: a family name, or a provider id outside families.

    Raises LookupError for a name that is neither a family nor a registered provider.
    """
    if name in FAMILIES:
        return name
    if name not in providers.PROVIDERS:
        raise LookupError(name)
    return family_of(name) or name


def namespaces() -> list[str]:
    """Every name `namespace()` accepts: the families, then the registered provider ids."""
    return [*FAMILIES, *providers.PROVIDERS]


def namespace_modules(space: str) -> list[ModuleType]:
    """The modules answering for a namespace: the family's own module first, then its providers'."""
    modules = []
    if space in FAMILIES:
        modules.append(import_module(FAMILIES[space][1]))
    for provider_id, module in sandbox_modules().items():
        if (family_of(provider_id) or provider_id) == space:
            modules.append(module)
    return modules
