"""Settings from the environment: the master key, refusal without one, and the deploy check."""

import logging
import stat
import subprocess

import pytest
from django.core.exceptions import ImproperlyConfigured

from sibling.master_key import MASTER_KEY_BYTES, master_key_generate, master_key_load
from tests.helpers import MANAGE, project_env


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
    # Before, a missing SIBLING_PUBLIC_URL silently became http://127.0.0.1:8000: Plaid's webhook
    # URL and the Gmail push audience pointed at the server itself.
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
        env=project_env(**PRODUCTION, GMAIL_SANDBOX="1", PLAID_SANDBOX="1"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "not mounted" in result.stdout
