"""Settings from the environment: the master key, refusal without one, and the deploy check."""

import logging
import stat
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from sibling.master_key import MASTER_KEY_BYTES, master_key_generate, master_key_load
from tests.helpers import BASE_DIR, MANAGE, project_env


def test_development_key_is_generated_once_with_mode_0600_and_a_warning(tmp_path, caplog):
    key_file = tmp_path / "var" / "master.key"
    with caplog.at_level(logging.WARNING):
        first = master_key_load(configured="", debug=True, key_file=key_file)
    assert len(first) == MASTER_KEY_BYTES
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert "generated a development master key" in caplog.text
    assert master_key_load(configured="", debug=True, key_file=key_file) == first


def test_configured_key_wins_and_is_validated(tmp_path):
    configured = master_key_generate()
    key = master_key_load(configured=configured, debug=False, key_file=tmp_path / "unused")
    assert len(key) == MASTER_KEY_BYTES
    assert not (tmp_path / "unused").exists()
    with pytest.raises(ImproperlyConfigured, match="96 bytes"):
        master_key_load(configured="c2hvcnQ=", debug=False, key_file=tmp_path / "k")
    with pytest.raises(ImproperlyConfigured, match="base64"):
        master_key_load(configured="not base64!", debug=False, key_file=tmp_path / "k")


def test_without_debug_no_key_means_no_start(tmp_path):
    with pytest.raises(ImproperlyConfigured, match="SIBLING_MASTER_KEY is required"):
        master_key_load(configured="", debug=False, key_file=tmp_path / "master.key")
    assert not (tmp_path / "master.key").exists()


PRODUCTION = {
    "DEBUG": "0",
    "SECRET_KEY": "x9!production-like-secret-key-that-is-long-and-random-7Hq2Lm0pZr4Vt8",
    "ALLOWED_HOSTS": "sibling.example.com",
    "SIBLING_PUBLIC_URL": "https://sibling.example.com",
}


def test_process_refuses_to_start_without_a_master_key_when_debug_is_off():
    env = project_env(**PRODUCTION, SIBLING_MASTER_KEY="")
    result = subprocess.run(
        [*MANAGE, "check"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "SIBLING_MASTER_KEY is required" in result.stderr


def test_deploy_check_passes_with_production_values():
    result = subprocess.run(
        [*MANAGE, "check", "--deploy", "--fail-level", "WARNING"],
        env=project_env(**PRODUCTION),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def deploy_check(
    *, unset: tuple[str, ...] = (), **overrides: str
) -> subprocess.CompletedProcess[str]:
    env = project_env(**{**PRODUCTION, **overrides})
    for name in unset:
        env.pop(name, None)
    return subprocess.run(
        [*MANAGE, "check", "--deploy"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_deploy_check_fails_without_a_public_url_when_debug_is_off():
    # Before, a missing SIBLING_PUBLIC_URL silently became http://127.0.0.1:8000: webhook URLs
    # sent to providers and push audiences pointed at the server itself.
    result = deploy_check(unset=("SIBLING_PUBLIC_URL",))
    assert result.returncode != 0
    assert "sibling.E001" in result.stderr
    assert "SIBLING_PUBLIC_URL is not set" in result.stderr


@pytest.mark.parametrize(
    "url", ["http://sibling.example.com", "sibling.example.com", "https://", "ftp://x.example"]
)
def test_deploy_check_fails_for_a_public_url_that_is_not_https(url):
    result = deploy_check(SIBLING_PUBLIC_URL=url)
    assert result.returncode != 0
    assert "sibling.E002" in result.stderr
    assert "SIBLING_PUBLIC_URL must be an https:// URL" in result.stderr


def test_development_keeps_the_local_public_url_without_a_check_error():
    script = "from django.conf import settings; print(settings.SIBLING_PUBLIC_URL)"
    env = project_env(DEBUG="1", PORT="8123")
    env.pop("SIBLING_PUBLIC_URL", None)
    shown = subprocess.run(
        [*MANAGE, "shell", "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip().splitlines()[-1] == "http://127.0.0.1:8123"
    checked = subprocess.run(
        [*MANAGE, "check", "--deploy"], env=env, capture_output=True, text=True, timeout=120
    )
    assert "sibling.E00" not in checked.stdout + checked.stderr


def test_the_provider_sandbox_cannot_be_enabled_without_debug():
    script = (
        "from django.conf import settings; from django.urls import resolve, Resolver404\n"
        "assert not settings.SIBLING_SANDBOX_ALLOWED\n"
        "assert not any(p['sandbox'] for p in settings.SIBLING_PROVIDERS.values())\n"
        "try:\n    resolve('/sandbox/google/token')\n"
        "except Resolver404:\n    print('not mounted')\n"
    )
    result = subprocess.run(
        [*MANAGE, "shell", "-c", script],
        # Every provider asks for the sandbox, and none gets it.
        env=project_env(**PRODUCTION, **{f"{p.id.upper()}_SANDBOX": "1" for p in _providers()}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "not mounted" in result.stdout


# --- Providers' settings, from their declarations ---------------------------------------------


def test_the_registry_imports_without_settings_or_models():
    """sibling/settings.py imports the registry, so every registered declaration module (and
    what it imports) must load before Django's settings exist: a module reading a setting or
    importing a model at import time would fail here (and, in the settings, load half-made
    settings)."""
    script = (
        "import sys\n"
        "from django.conf import settings\n"
        "from sources.providers import PROVIDERS, REGISTRY\n"
        "from sources.providers.config import settings_from_environment\n"
        "assert len(PROVIDERS) == len(REGISTRY)\n"
        "assert not settings.configured\n"
        "models = [m for m in sys.modules if m.endswith('.models') and '.' in m\n"
        "          and not m.startswith(('requests.', 'charset_normalizer.'))]\n"
        "assert not models, models\n"
        "print('loaded without settings')\n"
    )
    env = {k: v for k, v in project_env().items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "loaded without settings" in result.stdout


def provider_env(**variables: str):
    """An environ.Env reading only these variables (not the process's environment)."""
    import environ

    env = environ.Env()
    env.ENVIRON = dict(variables)
    return env


def _providers():
    from sources.providers import PROVIDERS

    return list(PROVIDERS.values())


def _real_credentials(provider) -> dict[str, str]:
    return {f"{provider.id.upper()}_{key.upper()}": f"real-{key}" for key in provider.credentials}


@pytest.mark.parametrize("sandbox_allowed", [True, False])
def test_every_provider_gets_its_settings_from_its_declaration_alone(sandbox_allowed):
    from sources.providers.config import settings_from_environment

    built = settings_from_environment(provider_env(), sandbox_allowed=sandbox_allowed)
    for provider in _providers():
        config = built["SIBLING_PROVIDERS"][provider.id]
        assert config["sandbox"] is sandbox_allowed
        assert config["credentials"] == (
            dict(provider.credentials)
            if sandbox_allowed
            else dict.fromkeys(provider.credentials, "")
        )
        assert config["urls"] == dict.fromkeys(provider.urls, "")
        for setting in provider.settings:
            name = f"{provider.id.upper()}_{setting.name.upper()}"
            sandboxed = sandbox_allowed and setting.sandbox_default is not None
            assert built[name] == (setting.sandbox_default if sandboxed else setting.default)


def test_real_credentials_in_the_environment_mean_the_real_provider():
    from sources.providers.config import settings_from_environment

    for provider in _providers():
        if not provider.credentials:
            continue
        variables = _real_credentials(provider)
        built = settings_from_environment(provider_env(**variables), sandbox_allowed=True)
        config = built["SIBLING_PROVIDERS"][provider.id]
        assert config["sandbox"] is False
        assert config["credentials"] == {key: f"real-{key}" for key in provider.credentials}
        # One credential missing: the sandbox, in development.
        partial = dict(list(variables.items())[:-1])
        built = settings_from_environment(provider_env(**partial), sandbox_allowed=True)
        assert built["SIBLING_PROVIDERS"][provider.id]["sandbox"] is True
        # Forced to the sandbox in development, never outside it.
        forced = {**variables, f"{provider.id.upper()}_SANDBOX": "1"}
        built = settings_from_environment(provider_env(**forced), sandbox_allowed=True)
        assert built["SIBLING_PROVIDERS"][provider.id]["sandbox"] is True
        built = settings_from_environment(provider_env(**forced), sandbox_allowed=False)
        assert built["SIBLING_PROVIDERS"][provider.id]["sandbox"] is False


def test_endpoint_urls_and_declared_settings_are_read_from_the_environment():
    from sources.providers.config import settings_from_environment

    for provider in _providers():
        prefix = provider.id.upper()
        variables = {
            f"{prefix}_{name.upper()}_URL": f"https://staging/{name}" for name in provider.urls
        }
        for setting in provider.settings:
            variables[f"{prefix}_{setting.name.upper()}"] = "1" if setting.cast is not str else "v"
        built = settings_from_environment(provider_env(**variables), sandbox_allowed=True)
        assert built["SIBLING_PROVIDERS"][provider.id]["urls"] == {
            name: f"https://staging/{name}" for name in provider.urls
        }
        for setting in provider.settings:
            name = f"{prefix}_{setting.name.upper()}"
            expected = setting.cast("1") if setting.cast is not str else "v"
            assert built[name] == (True if setting.cast is bool else expected)


def test_a_new_provider_needs_no_settings_line():
    """A declaration the project has never seen gets its settings, backend and sandbox client."""
    from sources.providers.base import OAuth2Provider, Setting
    from sources.providers.config import settings_from_environment

    class Newcomer(OAuth2Provider):
        id = "newcomer"
        name = "Newcomer"
        category = "behavioral"
        urls = {"authorize": "https://n.example/a", "token": "https://n.example/t"}
        sandbox_paths = {"authorize": "/n/a", "token": "/n/t"}
        credentials = {"client_id": "sandbox-n-client", "client_secret": "sandbox-n-secret"}
        settings = (
            Setting("verify_token", sandbox_default="sandbox-verify"),
            Setting("page_size", default=50, cast=int),
        )

    built = settings_from_environment(
        provider_env(NEWCOMER_PAGE_SIZE="200"), sandbox_allowed=True, providers=[Newcomer]
    )
    assert built["SIBLING_PROVIDERS"]["newcomer"]["sandbox"] is True
    assert built["NEWCOMER_VERIFY_TOKEN"] == "sandbox-verify"
    assert built["NEWCOMER_PAGE_SIZE"] == 200
    assert built["SIBLING_SANDBOX_CLIENTS"] == {"sandbox-n-client": "sandbox-n-secret"}
    assert built["SIBLING_OAUTH2_BACKENDS"] == ["sources.providers.backends.newcomer"]

    real = settings_from_environment(
        provider_env(NEWCOMER_CLIENT_ID="id", NEWCOMER_CLIENT_SECRET="secret"),
        sandbox_allowed=True,
        providers=[Newcomer],
    )
    assert real["NEWCOMER_VERIFY_TOKEN"] == ""  # no sandbox value for a real provider


def test_a_declared_setting_with_a_bad_value_stops_the_start_with_its_name():
    from sources.providers.base import ApiKeyProvider, Setting
    from sources.providers.config import settings_from_environment

    class Counted(ApiKeyProvider):
        id = "counted"
        settings = (Setting("page_size", default=50, cast=int),)

    with pytest.raises(ImproperlyConfigured, match="COUNTED_PAGE_SIZE is not a valid value"):
        settings_from_environment(
            provider_env(COUNTED_PAGE_SIZE="many"), sandbox_allowed=True, providers=[Counted]
        )


def test_the_running_settings_hold_every_declared_setting_and_backend(settings):
    from sources.providers import OAuth2Provider

    for provider in _providers():
        assert provider.id in settings.SIBLING_PROVIDERS
        for setting in provider.settings:
            assert hasattr(settings, f"{provider.id.upper()}_{setting.name.upper()}")
        backend = f"sources.providers.backends.{provider.id}"
        assert (backend in settings.AUTHENTICATION_BACKENDS) is issubclass(provider, OAuth2Provider)


def test_production_reads_real_credentials_from_the_environment():
    """A process with DEBUG off and a provider's credentials set uses them (never the sandbox)."""
    provider = next(p for p in _providers() if p.credentials)
    script = (
        "from django.conf import settings\n"
        f"c = settings.SIBLING_PROVIDERS[{provider.id!r}]\n"
        "print(c['sandbox'], sorted(c['credentials'].values()))\n"
    )
    result = subprocess.run(
        [*MANAGE, "shell", "-c", script],
        env=project_env(**PRODUCTION, **_real_credentials(provider)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    expected = sorted(f"real-{key}" for key in provider.credentials)
    assert result.stdout.strip().splitlines()[-1] == f"False {expected}"
