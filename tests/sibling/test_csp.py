"""The Content-Security-Policy header: on people's pages, on admin and on the sandbox's pages, with
scripts only from here or with the page's nonce, and the providers' sources derived from where
their endpoints are configured. The browser test (tests/sources/test_browser.py) shows the pages
and the connect flows work under it."""

import re
import subprocess

import pytest
from django.urls import reverse

from sibling.csp import provider_sources
from tests.factories import UserFactory
from tests.helpers import MANAGE, project_env

pytestmark = pytest.mark.django_db

HEADER = "Content-Security-Policy"


def directives(response) -> dict[str, list[str]]:
    assert HEADER in response, f"no {HEADER} on {response.request['PATH_INFO']}"
    policy = {}
    for part in response[HEADER].split(";"):
        name, *values = part.split()
        policy[name] = values
    return policy


def assert_strict(policy: dict[str, list[str]]) -> None:
    """What every page's policy holds, whatever the providers add."""
    assert policy["default-src"] == ["'self'"]
    assert "'self'" in policy["script-src"]
    assert "'unsafe-inline'" not in policy["script-src"]
    assert "'unsafe-eval'" not in policy["script-src"]
    assert policy["object-src"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["form-action"][0] == "'self'"


@pytest.fixture
def sandboxed(settings):
    """Every provider on the sandbox of a server at another origin, as a developer may have it."""
    settings.SIBLING_SANDBOX_BASE_URL = "http://127.0.0.1:8123/sandbox"
    return settings


def test_a_persons_pages_carry_the_policy(client):
    client.force_login(UserFactory(), backend="django.contrib.auth.backends.ModelBackend")
    for name in ("sources:connections", "ingestion:my_data", "ingestion:privacy", "login"):
        response = client.get(reverse(name))
        assert response.status_code == 200, name
        assert_strict(directives(response))


def test_the_plaid_page_allows_its_inline_script_by_nonce_and_the_sandbox_link_script(
    client, sandboxed
):
    client.force_login(UserFactory(), backend="django.contrib.auth.backends.ModelBackend")
    response = client.get(reverse("sources:plaid_connect"))
    policy = directives(response)
    assert_strict(policy)
    nonces = [v for v in policy["script-src"] if v.startswith("'nonce-")]
    assert len(nonces) == 1
    nonce = nonces[0][len("'nonce-") : -1]
    html = response.content.decode()
    inline = re.findall(r"<script([^>]*)>", html)
    assert f'nonce="{nonce}"' in " ".join(inline)
    # Every inline script carries the nonce; the others are allowed by their source.
    for attributes in inline:
        assert "src=" in attributes or f'nonce="{nonce}"' in attributes, attributes
    assert "http://127.0.0.1:8123/sandbox/plaid/link-initialize.js" in policy["script-src"]
    assert 'src="http://127.0.0.1:8123/sandbox/plaid/link-initialize.js"' in html
    # The Link imitation calls the sandbox's public token endpoint.
    assert "http://127.0.0.1:8123/" in policy["connect-src"]
    # The Google connect buttons redirect to the sandbox's authorize page.
    assert "http://127.0.0.1:8123/" in policy["form-action"]
    # A fresh nonce every time.
    again = directives(client.get(reverse("sources:plaid_connect")))["script-src"]
    assert nonces[0] not in again


def test_real_providers_get_their_documented_sources(settings):
    # https://plaid.com/docs/link/web/#content-security-policy-csp
    settings.SIBLING_SANDBOX_ALLOWED = False
    sources = provider_sources()
    assert sources["script-src"] == ["https://cdn.plaid.com/link/v2/stable/link-initialize.js"]
    assert sources["frame-src"] == ["https://cdn.plaid.com/"]
    assert sources["connect-src"] == ["https://production.plaid.com/"]
    assert sources["form-action"] == ["https://accounts.google.com/"]


def test_a_configured_plaid_environment_is_the_one_allowed(settings):
    settings.SIBLING_SANDBOX_ALLOWED = False
    settings.SIBLING_PROVIDERS = {
        **settings.SIBLING_PROVIDERS,
        "plaid": {
            **settings.SIBLING_PROVIDERS["plaid"],
            "urls": {"api": "https://sandbox.plaid.com", "link_script": ""},
        },
    }
    assert provider_sources()["connect-src"] == ["https://sandbox.plaid.com/"]


def test_admin_pages_carry_the_policy(client):
    admin = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(admin, backend="django.contrib.auth.backends.ModelBackend")
    for url in (
        reverse("admin:index"),
        reverse("admin:sources_userdatasource_changelist"),
        reverse("sync_dashboard"),
        reverse("privacy_search"),
        reverse("admin:login"),
    ):
        response = client.get(url)
        assert response.status_code in (200, 302), url
        assert_strict(directives(response))


def test_the_sandbox_pages_carry_the_policy(client, sandboxed):
    consent = client.get(
        reverse("sandbox:google-authorize"),
        {
            "client_id": "sandbox-gmail-client",
            "redirect_uri": "http://testserver/connect/complete/gmail/",
            "response_type": "code",
            "scope": "openid email",
            "state": "s",
        },
    )
    assert consent.status_code == 200, consent.content[:300]
    assert_strict(directives(consent))
    link_script = client.get(reverse("sandbox:plaid-link-script"))
    assert link_script.status_code == 200
    assert_strict(directives(link_script))


def test_report_only_is_a_setting():
    script = (
        "from django.test import Client\n"
        "r = Client(HTTP_HOST='localhost').get('/login/')\n"
        "print('enforced:', r.headers.get('Content-Security-Policy'))\n"
        "print('report-only:', r.headers.get('Content-Security-Policy-Report-Only'))\n"
    )
    result = subprocess.run(
        [*MANAGE, "shell", "-c", script],
        env=project_env(
            SIBLING_CSP_REPORT_ONLY="1", SIBLING_CSP_REPORT_URI="https://reports.example/csp"
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "enforced: None" in result.stdout
    report_only = next(
        line for line in result.stdout.splitlines() if line.startswith("report-only:")
    )
    assert "default-src 'self'" in report_only and "frame-ancestors 'none'" in report_only
    assert "report-uri https://reports.example/csp" in report_only


def test_a_malformed_provider_url_is_left_out_not_a_failure_of_every_page(client, settings):
    """A typo in PLAID_LINK_SCRIPT_URL (an unclosed IPv6 bracket) must not answer 500 on every
    page, admin's login included: the URL is left out of the policy."""
    settings.SIBLING_SANDBOX_ALLOWED = False
    settings.SIBLING_PROVIDERS = {
        **settings.SIBLING_PROVIDERS,
        "plaid": {
            **settings.SIBLING_PROVIDERS["plaid"],
            "urls": {"api": "https://sandbox.plaid.com", "link_script": "https://[cdn.plaid.com/x"},
        },
    }
    sources = provider_sources()
    assert "script-src" not in sources and "frame-src" not in sources
    assert sources["connect-src"] == ["https://sandbox.plaid.com/"]
    for url in ("/login/", "/admin/login/"):
        response = client.get(url)
        assert response.status_code == 200, url
        assert_strict(directives(response))
