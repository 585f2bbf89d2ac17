"""Connections made against the sandbox the way a person's browser makes them, for tests and
benchmarks: the Google OAuth code flow through the consent form. A provider's own steps (a
hosted link's token exchange, say) are helpers of its sandbox module."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from django.conf import settings
from django.urls import reverse

from sources.providers import OAuth2Provider
from sources.services import oauth_credentials_from


def redirect_uri(provider: type[OAuth2Provider]) -> str:
    """The provider's complete URL at the sandbox's origin: a redirect URI the sandbox has
    registered for the provider's client (the code is taken from the redirect, never followed)."""
    base = urlsplit(settings.SIBLING_SANDBOX_BASE_URL)
    return f"{base.scheme}://{base.netloc}{reverse('social:complete', args=[provider.id])}"


def google_credentials(provider: type[OAuth2Provider], email: str) -> dict[str, Any]:
    """Consent as `email` on the sandbox's page, exchange the code: a connection's credentials."""
    client = provider.client_credentials()
    params = {
        "client_id": client["client_id"],
        "redirect_uri": redirect_uri(provider),
        "response_type": "code",
        "scope": " ".join(("openid", "email", *provider.scopes)),
        "state": "state",
        "access_type": "offline",
        "prompt": "consent",
    }
    answer = requests.post(
        provider.url("authorize"),
        data={**params, "email": email, "decision": "allow"},
        allow_redirects=False,
        timeout=30,
    )
    answer.raise_for_status()
    code = parse_qs(urlsplit(answer.headers["Location"]).query)["code"][0]
    token = requests.post(
        provider.url("token"),
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": params["redirect_uri"],
            "client_id": client["client_id"],
            "client_secret": client["client_secret"],
        },
        timeout=30,
    )
    token.raise_for_status()
    return oauth_credentials_from(token.json(), uid=email)
