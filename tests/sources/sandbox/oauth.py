"""Google's OAuth flow against the sandbox, as a browser and a client run it, for any registered
Google provider (the first one unless a test picks another)."""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import parse_qs, urlsplit

from sources import providers
from sources.providers.google import GoogleProvider

REDIRECT_URI = "http://testserver/complete/"
EMAIL = "sandbox.person@example.com"


def google_providers() -> list[type[GoogleProvider]]:
    return [p for p in providers.PROVIDERS.values() if issubclass(p, GoogleProvider)]


def google_client(provider: type[GoogleProvider] | None = None) -> tuple[str, str]:
    """(client_id, client_secret) of a Google provider's sandbox client."""
    credentials = (provider or google_providers()[0]).client_credentials()
    return credentials["client_id"], credentials["client_secret"]


def google_scope(provider: type[GoogleProvider] | None = None) -> str:
    return " ".join((provider or google_providers()[0]).scopes)


def pkce_pair(verifier: str = "v" * 50) -> tuple[str, str]:
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).decode().rstrip("=")


def consent(client, *, decision="allow", email=EMAIL, scope=None, **extra):
    """Post the consent form as the browser would; returns the redirect's query parameters."""
    data = {
        "client_id": google_client()[0],
        "redirect_uri": REDIRECT_URI,
        "response_type": "code",
        "scope": scope or google_scope(),
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


def exchange(client, code, *, client_pair=None, **extra):
    client_id, secret = client_pair or google_client()
    return client.post(
        "/sandbox/google/token",
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "client_id": client_id,
            "client_secret": secret,
            **extra,
        },
    )


def google_tokens(client, *, scope=None, email=EMAIL, client_pair=None) -> dict:
    client_pair = client_pair or google_client()
    params = consent(client, scope=scope, email=email, client_id=client_pair[0])
    response = exchange(client, params["code"], client_pair=client_pair)
    assert response.status_code == 200, response.content
    return response.json()


def provider_tokens(client, provider: type[GoogleProvider], *, scope=None, email=EMAIL) -> dict:
    """Tokens of one Google provider's client, for its scopes (or `scope`)."""
    return google_tokens(
        client,
        scope=scope or google_scope(provider),
        email=email,
        client_pair=google_client(provider),
    )


def bearer(token: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}
