"""Email settings from the environment: the console in development, SMTP from EMAIL_URL or the
EMAIL_* variables, and the deploy check that refuses a local backend in production."""

import json
import subprocess

from tests.helpers import MANAGE, project_env
from tests.sibling.test_settings import PRODUCTION

SHOW = (
    "import json; from django.conf import settings as s; print(json.dumps({n: getattr(s, n) "
    "for n in ('EMAIL_BACKEND', 'EMAIL_HOST', 'EMAIL_PORT', 'EMAIL_HOST_USER', "
    "'EMAIL_HOST_PASSWORD', 'EMAIL_USE_TLS', 'EMAIL_USE_SSL', 'EMAIL_TIMEOUT', "
    "'DEFAULT_FROM_EMAIL')}))"
)
SMTP = "django.core.mail.backends.smtp.EmailBackend"
UNSET = ("EMAIL_URL", "EMAIL_HOST", "EMAIL_BACKEND", "EMAIL_PORT", "EMAIL_USE_TLS")


def email_settings(**variables: str) -> dict:
    env = project_env(**variables)
    for name in UNSET:
        if name not in variables:
            env.pop(name, None)
    shown = subprocess.run(
        [*MANAGE, "shell", "-c", SHOW], env=env, capture_output=True, text=True, timeout=120
    )
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout.strip().splitlines()[-1])


def test_development_prints_emails_to_the_console():
    shown = email_settings(DEBUG="1")
    assert shown["EMAIL_BACKEND"] == "django.core.mail.backends.console.EmailBackend"
    assert shown["EMAIL_TIMEOUT"] == 20


def test_smtp_from_an_email_url_or_from_the_variables():
    shown = email_settings(
        **PRODUCTION,
        EMAIL_URL="smtp+tls://alerts%40sibling.example.com:p%40ss@smtp.example.com:587",
        DEFAULT_FROM_EMAIL="Sibling <alerts@sibling.example.com>",
    )
    assert shown["EMAIL_BACKEND"] == SMTP
    assert (shown["EMAIL_HOST"], shown["EMAIL_PORT"]) == ("smtp.example.com", 587)
    assert shown["EMAIL_HOST_USER"] == "alerts@sibling.example.com"
    assert shown["EMAIL_HOST_PASSWORD"] == "p@ss"
    assert shown["EMAIL_USE_TLS"] is True
    assert shown["DEFAULT_FROM_EMAIL"] == "Sibling <alerts@sibling.example.com>"

    shown = email_settings(
        **PRODUCTION,
        EMAIL_HOST="smtp.example.com",
        EMAIL_USE_SSL="1",
        EMAIL_HOST_USER="alerts",
        EMAIL_HOST_PASSWORD="secret",
    )
    assert shown["EMAIL_BACKEND"] == SMTP
    assert (shown["EMAIL_HOST"], shown["EMAIL_PORT"]) == ("smtp.example.com", 465)
    assert shown["EMAIL_USE_SSL"] is True and shown["EMAIL_USE_TLS"] is False
    assert shown["DEFAULT_FROM_EMAIL"] == "Sibling <no-reply@sibling.example.com>"
    # Nothing named: this host's own mail server, as Django's defaults.
    shown = email_settings(**PRODUCTION)
    assert shown["EMAIL_BACKEND"] == SMTP
    assert (shown["EMAIL_HOST"], shown["EMAIL_PORT"], shown["EMAIL_USE_TLS"]) == (
        "localhost",
        25,
        False,
    )
    # In development too, a configured server is used rather than the console.
    assert email_settings(DEBUG="1", EMAIL_HOST="localhost")["EMAIL_BACKEND"] == SMTP


def test_the_deploy_check_warns_of_a_local_backend_in_production():
    env = project_env(**PRODUCTION, EMAIL_BACKEND="django.core.mail.backends.console.EmailBackend")
    checked = subprocess.run(
        [*MANAGE, "check", "--deploy"], env=env, capture_output=True, text=True, timeout=120
    )
    assert "alerts.W001" in checked.stdout + checked.stderr
