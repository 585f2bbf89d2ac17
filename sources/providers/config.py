"""Every provider's settings, read from the environment as its declaration says.

``sibling/settings.py`` merges ``settings_from_environment(...)`` into its module, so a new
provider needs no line there. Per registered provider (``<ID>`` is its id in upper case):

- ``<ID>_<CREDENTIAL>`` for each declared client credential (``GMAIL_CLIENT_ID``...). All of
  them set means the real provider; otherwise, in development, the built-in sandbox with the
  declaration's sandbox values. ``<ID>_SANDBOX=0/1`` forces the choice (development only: with
  the sandbox not allowed, never the sandbox).
- ``<ID>_<NAME>_URL`` overrides one endpoint (a staging service, say).
- ``<ID>_<NAME>`` for each declared ``Setting``, published under the same name.
- ``<ID>_BUDGET_<NAME>`` for each declared ``Budget``: its limit (a positive integer) instead
  of the documented default; None when unset.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import environ

from sources.providers.base import OAuth2Provider, Provider, Setting

BACKENDS_MODULE = "sources.providers.backends"


def setting_name(provider: type[Provider], name: str) -> str:
    """The environment variable and Django setting of a provider's declared name."""
    return f"{provider.id.upper()}_{name.upper()}"


def _setting_value(env: environ.Env, name: str, setting: Setting, *, sandbox: bool) -> Any:
    default = setting.sandbox_default if sandbox and setting.sandbox_default is not None else None
    if default is None:
        default = setting.default
    if name not in env.ENVIRON:
        return default
    if setting.cast is bool:
        return env.bool(name)
    try:
        return setting.cast(env.ENVIRON[name])
    except (TypeError, ValueError) as err:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(f"{name} is not a valid value: {err}") from None


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def provider_config(
    env: environ.Env, provider: type[Provider], *, sandbox_allowed: bool
) -> dict[str, Any]:
    """One provider's ``SIBLING_PROVIDERS`` entry: sandbox or not, credentials, URL overrides."""
    configured = {
        key: env.str(setting_name(provider, key), default="") for key in provider.credentials
    }
    has_real = all(configured.values()) if configured else False
    sandbox = sandbox_allowed and env.bool(setting_name(provider, "sandbox"), default=not has_real)
    return {
        "sandbox": sandbox,
        "credentials": dict(provider.credentials) if sandbox else configured,
        "urls": {u: env.str(setting_name(provider, f"{u}_url"), default="") for u in provider.urls},
    }


def sandbox_client(provider: type[Provider]) -> tuple[str, str] | None:
    """The sandbox's (client id, secret) of a provider declaring them, else None."""
    creds = provider.credentials
    secrets = [value for key, value in creds.items() if key != "client_id"]
    if "client_id" in creds and len(secrets) == 1:
        return creds["client_id"], secrets[0]
    return None


def settings_from_environment(
    env: environ.Env,
    *,
    sandbox_allowed: bool,
    providers: Iterable[type[Provider]] | None = None,
) -> dict[str, Any]:
    """The Django settings of the registered providers (or of ``providers``), by name.

    ``SIBLING_PROVIDERS`` ({id: {"sandbox", "credentials", "urls"}}), each declared setting,
    ``SIBLING_SANDBOX_CLIENTS`` ({sandbox client id: its secret}, which the sandbox accepts)
    and ``SIBLING_OAUTH2_BACKENDS`` (the dotted paths of the OAuth2 providers' backends, for
    AUTHENTICATION_BACKENDS).
    """
    if providers is None:
        from sources.providers import PROVIDERS

        providers = PROVIDERS.values()
    result: dict[str, Any] = {}
    configs: dict[str, dict[str, Any]] = {}
    clients: dict[str, str] = {}
    backends: list[str] = []
    for provider in providers:
        config = provider_config(env, provider, sandbox_allowed=sandbox_allowed)
        configs[provider.id] = config
        for setting in provider.settings:
            name = setting_name(provider, setting.name)
            result[name] = _setting_value(env, name, setting, sandbox=config["sandbox"])
        for budget in provider.budgets:
            name = setting_name(provider, f"budget_{budget.name}")
            limit = Setting(name, default=None, cast=_positive_int)
            result[name] = _setting_value(env, name, limit, sandbox=config["sandbox"])
        client = sandbox_client(provider)
        if client is not None:
            # Accepted even when this process talks to the real provider: the sandbox serves
            # other processes and tests, and is never mounted without DEBUG.
            clients[client[0]] = client[1]
        if issubclass(provider, OAuth2Provider):
            backends.append(f"{BACKENDS_MODULE}.{provider.id}")
    result["SIBLING_PROVIDERS"] = configs
    result["SIBLING_SANDBOX_CLIENTS"] = clients
    result["SIBLING_OAUTH2_BACKENDS"] = backends
    return result
