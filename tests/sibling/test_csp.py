"""The Content-Security-Policy header: on people's pages, on admin and on the sandbox's pages, with
scripts only from here or with the page's nonce, and the providers' sources derived from where
their endpoints are configured. The browser test (tests/sources/test_browser.py) shows the pages
and the connect flows work under it."""

import re
import subprocess
from urllib.parse import urlsplit

import pytest
from django.urls import reverse

from sibling.csp import provider_sources
from sources.providers import providers_with
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


def _link_provider(settings, **config: object):
    """The first hosted-link provider, its configuration overridden with ``config``."""
    linked = providers_with(auth_mode="hosted_link")
    if not linked:
        pytest.skip("no provider connects through a hosted link")
    provider = linked[0]
    if config:
        settings.SIBLING_PROVIDERS = {
            **settings.SIBLING_PROVIDERS,
            provider.id: {**settings.SIBLING_PROVIDERS[provider.id], **config},
        }
    return provider


@pytest.mark.parametrize("provider", providers_with(auth_mode="hosted_link"), ids=lambda p: p.id)
def test_the_link_page_allows_its_inline_script_by_nonce_and_the_sandbox_link_script(
    client, sandboxed, provider
):
    client.force_login(UserFactory(), backend="django.contrib.auth.backends.ModelBackend")
    response = client.get(reverse("sources:connect", args=[provider.id]))
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
    script = provider.url("link_script")
    assert script.startswith("http://127.0.0.1:8123/sandbox/")
    assert script in policy["script-src"] and f'src="{script}"' in html
    # The script's dialog is framed from its origin, and the imitation calls the sandbox.
    assert "http://127.0.0.1:8123/" in policy["frame-src"]
    if provider.link_connect_urls:
        assert "http://127.0.0.1:8123/" in policy["connect-src"]
    # OAuth2 connect buttons redirect to the sandbox's authorize page.
    if providers_with(auth_mode="oauth2"):
        assert "http://127.0.0.1:8123/" in policy["form-action"]
    # A fresh nonce every time.
    again = directives(client.get(reverse("sources:connect", args=[provider.id])))["script-src"]
    assert nonces[0] not in again


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/"


def test_real_providers_get_the_sources_their_declarations_name(settings):
    settings.SIBLING_SANDBOX_ALLOWED = False
    sources = provider_sources()
    linked = providers_with(auth_mode="hosted_link")
    assert sources.get("script-src", []) == [p.urls["link_script"] for p in linked]
    assert sources.get("frame-src", []) == list(
        dict.fromkeys(_origin(p.urls["link_script"]) for p in linked)
    )
    assert sources.get("connect-src", []) == list(
        dict.fromkeys(_origin(p.urls[name]) for p in linked for name in p.link_connect_urls)
    )
    assert sources.get("form-action", []) == list(
        dict.fromkeys(_origin(p.urls["authorize"]) for p in providers_with(auth_mode="oauth2"))
    )
    for url in sources.get("script-src", []) + sources.get("connect-src", []):
        assert url.startswith("https://")


def test_a_configured_environment_of_a_link_provider_is_the_one_allowed(settings):
    settings.SIBLING_SANDBOX_ALLOWED = False
    provider = _link_provider(settings)
    if not provider.link_connect_urls:
        pytest.skip("the provider's script calls no endpoint of its own")
    name = provider.link_connect_urls[0]
    _link_provider(settings, urls={name: "https://staging.example.net/api", "link_script": ""})
    assert "https://staging.example.net/" in provider_sources()["connect-src"]
    assert _origin(provider.urls[name]) not in provider_sources()["connect-src"]


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
    # Every OAuth2 provider's consent page and every hosted link's script, as the sandbox serves
    # them (the sandbox answers on this test server; only the policy's origin is another).
    for provider in providers_with(auth_mode="oauth2"):
        complete = reverse("social:complete", args=[provider.id])
        consent = client.get(
            urlsplit(provider.url("authorize")).path,
            {
                "client_id": provider.client_credentials()["client_id"],
                "redirect_uri": f"http://testserver{complete}",
                "response_type": "code",
                "scope": " ".join(provider.scopes),
                "state": "s",
            },
        )
        assert consent.status_code == 200, (provider.id, consent.content[:300])
        assert_strict(directives(consent))
    for provider in providers_with(auth_mode="hosted_link"):
        link_script = client.get(urlsplit(provider.url("link_script")).path)
        assert link_script.status_code == 200, provider.id
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
    """A typo in a link script's URL setting (an unclosed IPv6 bracket) must not answer 500 on
    every page, admin's login included: the URL is left out of the policy."""
    settings.SIBLING_SANDBOX_ALLOWED = False
    provider = _link_provider(settings)
    urls = {name: "https://staging.example.net/api" for name in provider.link_connect_urls}
    _link_provider(settings, urls={**urls, "link_script": "https://[cdn.example.net/x"})
    sources = provider_sources()
    assert "https://[cdn.example.net/x" not in sources.get("script-src", [])
    assert not any("[" in source for source in sources.get("frame-src", []))
    if urls:
        assert "https://staging.example.net/" in sources["connect-src"]
    for url in ("/login/", "/admin/login/"):
        response = client.get(url)
        assert response.status_code == 200, url
        assert_strict(directives(response))
