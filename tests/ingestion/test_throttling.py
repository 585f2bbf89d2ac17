"""Rate limits: login (per address and per username), signup, a hosted link's tokens and
exchanges, API key checks and the events API answer 429 with Retry-After once over their rate."""

from __future__ import annotations

import json

import pytest
from django.core.cache import cache
from django.urls import reverse

from ingestion.authentication import api_token_create
from sources.providers import providers_with
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def _ids(provider) -> str:
    return provider.id


@pytest.fixture(autouse=True)
def empty_cache():
    cache.clear()
    yield
    cache.clear()


def _assert_throttled(response, *, as_json: bool) -> None:
    assert response.status_code == 429
    assert int(response["Retry-After"]) >= 1
    if as_json:
        assert "Too many" in response.json()["error"]
    else:
        assert "Too many attempts" in response.content.decode()


def test_login_is_limited_per_address(client, settings):
    settings.SIBLING_LOGIN_RATE_IP = "3/10m"
    for n in range(3):
        response = client.post("/login/", {"username": f"guess{n}", "password": "wrong"})
        assert response.status_code == 200  # the form again, with its error
    _assert_throttled(
        client.post("/login/", {"username": "guess9", "password": "wrong"}), as_json=False
    )
    assert client.get("/login/").status_code == 200  # reading the page is not counted


def test_login_is_limited_per_username_from_any_address(client, settings):
    settings.SIBLING_LOGIN_RATE_USERNAME = "2/10m"
    person = UserFactory()
    for address in ("198.51.100.1", "198.51.100.2"):
        client.post("/login/", {"username": person.username, "password": "x"}, REMOTE_ADDR=address)
    blocked = client.post(
        "/login/",
        {"username": person.username.upper(), "password": "correct horse battery staple"},
        REMOTE_ADDR="198.51.100.3",
    )
    _assert_throttled(blocked, as_json=False)
    other = client.post(
        "/login/", {"username": "someone-else", "password": "x"}, REMOTE_ADDR="198.51.100.3"
    )
    assert other.status_code == 200


def test_signup_is_limited_per_address(client, settings):
    settings.SIBLING_SIGNUP_RATE = "2/h"
    for _ in range(2):
        assert client.post("/signup/", {"username": ""}).status_code == 200
    _assert_throttled(client.post("/signup/", {"username": ""}), as_json=False)


@pytest.mark.parametrize("provider", providers_with(auth_mode="hosted_link"), ids=_ids)
def test_link_tokens_are_limited_per_person_and_provider_in_json(
    client, settings, sandbox, provider
):
    settings.SIBLING_LINK_TOKEN_RATE = "2/10m"
    person = UserFactory()
    client.force_login(person)
    url = reverse("sources:link_token", args=[provider.id])
    for _ in range(2):
        assert client.post(url).status_code == 200
    _assert_throttled(client.post(url), as_json=True)
    client.force_login(UserFactory())  # another person has their own allowance
    assert client.post(url).status_code == 200


@pytest.mark.parametrize("provider", providers_with(auth_mode="hosted_link"), ids=_ids)
def test_link_exchanges_are_limited_per_person_in_json(client, settings, sandbox, provider):
    settings.SIBLING_LINK_TOKEN_RATE = "2/10m"
    client.force_login(UserFactory())
    url = reverse("sources:link_exchange", args=[provider.id])
    forged = {"public_token": "public-sandbox-forged"}
    for _ in range(2):  # each forged token costs a call to the provider, so each is counted
        assert client.post(url, forged, content_type="application/json").status_code == 502
    _assert_throttled(client.post(url, forged, content_type="application/json"), as_json=True)
    # Exchanges have their own count: link tokens are still allowed.
    assert client.post(reverse("sources:link_token", args=[provider.id])).status_code == 200


@pytest.mark.parametrize("provider", providers_with(auth_mode="api_key"), ids=_ids)
def test_key_checks_are_limited_per_person_and_provider(client, settings, sandbox, provider):
    settings.SIBLING_CONNECT_KEY_RATE = "2/10m"
    client.force_login(UserFactory())
    url = reverse("sources:connect", args=[provider.id])
    for _ in range(2):
        assert client.post(url, {"api_key": "not-a-key"}).status_code == 200
    _assert_throttled(client.post(url, {"api_key": "sandbox-abc"}), as_json=False)
    assert client.get(url).status_code == 200  # reading the page is not counted


def test_events_api_is_limited_per_person(client, settings):
    settings.SIBLING_EVENTS_API_RATE = "2/min"
    person = UserFactory()
    secret = api_token_create(user=person, name="Phone").secret
    body = json.dumps(
        {
            "events": [
                {
                    "id": "n1",
                    "kind": "note",
                    "occurred_at": "2025-03-01T08:30:00Z",
                    "data": {"text": "hi"},
                }
            ]
        }
    )
    headers = {"HTTP_AUTHORIZATION": f"Bearer {secret}"}
    for _ in range(2):
        response = client.post("/api/events/", body, content_type="application/json", **headers)
        assert response.status_code == 202
    throttled = client.post("/api/events/", body, content_type="application/json", **headers)
    assert throttled.status_code == 429
    assert int(throttled["Retry-After"]) >= 1 and "throttled" in throttled.json()["error"]


def test_admin_login_shares_the_login_limits(client, settings):
    settings.SIBLING_LOGIN_RATE_USERNAME = "2/10m"
    staff = UserFactory(is_staff=True)
    client.post("/login/", {"username": staff.username, "password": "x"})
    client.post("/admin/login/", {"username": staff.username, "password": "y"})
    _assert_throttled(
        client.post("/admin/login/", {"username": staff.username, "password": "z"}),
        as_json=False,
    )
    assert client.get("/admin/login/").status_code == 200  # reading the page is not counted


def test_behind_a_proxy_each_client_address_has_its_own_login_allowance(client, settings):
    """Behind the TLS proxy every request comes from the proxy's address: counted by it, one
    host's guesses would lock every person out. With SIBLING_PROXY_COUNT the address the proxy
    saw is counted, and what a client writes into X-Forwarded-For itself is not believed."""
    settings.SIBLING_LOGIN_RATE_IP = "2/10m"
    settings.SIBLING_PROXY_COUNT = 1
    proxy = {"REMOTE_ADDR": "10.0.0.2"}
    for n in range(2):
        client.post(
            "/login/",
            {"username": f"guess{n}", "password": "x"},
            HTTP_X_FORWARDED_FOR=f"192.0.2.{n}, 203.0.113.9",  # the first entry is forged
            **proxy,
        )
    forged = client.post(
        "/login/",
        {"username": "guess3", "password": "x"},
        HTTP_X_FORWARDED_FOR="192.0.2.77, 203.0.113.9",
        **proxy,
    )
    _assert_throttled(forged, as_json=False)
    someone_else = client.post(
        "/login/",
        {"username": "person", "password": "x"},
        HTTP_X_FORWARDED_FOR="198.51.100.20",
        **proxy,
    )
    assert someone_else.status_code == 200


def test_a_proxy_count_beyond_the_header_falls_back_to_the_connection(client, settings):
    """Too few or unreadable X-Forwarded-For entries (a request that reached Sibling around the
    proxy, or a miscounted setting): the connection's address is counted, never a 500."""
    settings.SIBLING_LOGIN_RATE_IP = "1/10m"
    settings.SIBLING_PROXY_COUNT = 2
    for forwarded in ("not-an-address, also-not", "198.51.100.20"):
        response = client.post(
            "/login/",
            {"username": "guess", "password": "x"},
            HTTP_X_FORWARDED_FOR=forwarded,
            REMOTE_ADDR="203.0.113.5",
        )
        if forwarded.startswith("not"):
            assert response.status_code == 200
        else:
            _assert_throttled(response, as_json=False)
