"""Helpers for the sandbox tests: consent and token exchange, a linked Plaid item."""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import parse_qs, urlsplit

import pytest

GMAIL_CLIENT = ("sandbox-gmail-client", "sandbox-gmail-secret")
FITBIT_CLIENT = ("sandbox-fitbit-client", "sandbox-fitbit-secret")
PLAID_CLIENT = {"client_id": "sandbox-plaid-client", "secret": "sandbox-plaid-secret"}
GMAIL_READONLY = "https://www.googleapis.com/auth/gmail.readonly"
HEALTH = "https://www.googleapis.com/auth/googlehealth."
HEALTH_SCOPES = " ".join(
    f"{HEALTH}{family}.readonly"
    for family in ("activity_and_fitness", "health_metrics_and_measurements", "sleep")
)
REDIRECT_URI = "http://testserver/complete/"
EMAIL = "sandbox.person@example.com"


def pkce_pair(verifier: str = "v" * 50) -> tuple[str, str]:
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).decode().rstrip("=")


def consent(client, *, decision="allow", email=EMAIL, scope=GMAIL_READONLY, **extra):
    """Post the consent form as the browser would; returns the redirect's query parameters."""
    data = {
        "client_id": GMAIL_CLIENT[0],
        "redirect_uri": REDIRECT_URI,
        "response_type": "code",
        "scope": scope,
        "state": "state-123",
        "access_type": "offline",
        "email": email,
        "decision": decision,
        **extra,
    }
    response = client.post("/sandbox/google/o/oauth2/v2/auth", data)
    assert response.status_code == 302, response.content
    location = response["Location"]
    assert location.startswith(data["redirect_uri"])
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def exchange(client, code, *, client_pair=GMAIL_CLIENT, **extra):
    return client.post(
        "/sandbox/google/token",
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "client_id": client_pair[0],
            "client_secret": client_pair[1],
            **extra,
        },
    )


def google_tokens(client, *, scope=GMAIL_READONLY, email=EMAIL, client_pair=GMAIL_CLIENT) -> dict:
    params = consent(client, scope=scope, email=email, client_id=client_pair[0])
    response = exchange(client, params["code"], client_pair=client_pair)
    assert response.status_code == 200, response.content
    return response.json()


def bearer(token: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def plaid_post(client, path: str, body: dict, *, auth: bool = True):
    payload = {**PLAID_CLIENT, **body} if auth else body
    return client.post(f"/sandbox/plaid/{path}", payload, content_type="application/json")


def plaid_link(client, institution_id: str = "ins_sandbox_first", webhook: str = "") -> dict:
    """Link token -> public token (as the Link script does) -> exchange."""
    link = plaid_post(
        client,
        "link/token/create",
        {
            "client_name": "Sibling",
            "language": "en",
            "country_codes": ["US"],
            "user": {"client_user_id": "person-1"},
            "products": ["transactions"],
            "webhook": webhook,
        },
    ).json()
    public = plaid_post(
        client,
        "link/public_token/create",
        {"link_token": link["link_token"], "institution_id": institution_id},
        auth=False,
    ).json()
    exchanged = plaid_post(
        client, "item/public_token/exchange", {"public_token": public["public_token"]}
    ).json()
    return {**exchanged, "link_token": link["link_token"], "metadata": public["metadata"]}


@pytest.fixture
def gmail_token(client) -> dict:
    return google_tokens(client)


@pytest.fixture
def health_token(client) -> dict:
    return google_tokens(client, scope=HEALTH_SCOPES, client_pair=FITBIT_CLIENT)


@pytest.fixture
def plaid_item(client) -> dict:
    return plaid_link(client)
