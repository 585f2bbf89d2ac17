"""Google's OAuth server as Google behaves at the edges: granular consent (a person unticks
scopes; the token response lists what was granted, written out in full), the ID token of an
`openid` grant, userinfo's flat error body, and the faults of an optional `email_verified` and of
a "Testing" app's refresh tokens expiring after 7 days."""

from __future__ import annotations

import jwt
import pytest

from sources.sandbox.faults import fault_set
from sources.sandbox.google import google_account_ensure

from .oauth import (
    EMAIL,
    REDIRECT_URI,
    bearer,
    consent,
    exchange,
    google_client,
    google_scope,
    google_tokens,
)

pytestmark = pytest.mark.django_db

AUTH = "/sandbox/google/o/oauth2/v2/auth"
USERINFO = "/sandbox/google/oauth2/v3/userinfo"
USERINFO_EMAIL = "https://www.googleapis.com/auth/userinfo.email"
USERINFO_PROFILE = "https://www.googleapis.com/auth/userinfo.profile"


def consent_page(client, scope: str):
    return client.get(
        AUTH,
        {
            "client_id": google_client()[0],
            "redirect_uri": REDIRECT_URI,
            "response_type": "code",
            "scope": scope,
            "access_type": "offline",
        },
    )


def tokens_after(client, params: dict) -> dict:
    response = exchange(client, params["code"])
    assert response.status_code == 200, response.content
    return response.json()


def test_the_consent_page_has_a_box_per_scope_but_the_basic_ones():
    from django.test import Client

    page = consent_page(Client(), f"openid email profile {google_scope()}").content.decode()
    for scope in google_scope().split():
        assert f'name="grant:{scope}" value="1" checked' in page
    for basic in ("openid", "email", "profile"):
        assert f'name="grant:{basic}"' not in page


def test_an_unticked_scope_is_left_out_of_the_grant_and_the_basic_ones_are_expanded(client):
    scope = f"openid email profile {google_scope()}"
    # The page's form, every box left unticked: only the basic scopes are granted.
    params = consent(client, scope=scope, granular="1")
    expected = f"openid {USERINFO_EMAIL} {USERINFO_PROFILE}"
    assert params["scope"] == expected
    body = tokens_after(client, params)
    assert body["scope"] == expected
    # The token carries only that: a read of the unticked scope's API is refused.
    info = client.get(USERINFO, **bearer(body["access_token"]))
    assert info.status_code == 200


def test_ticked_scopes_are_granted_and_written_out_in_full(client):
    provider_scopes = google_scope().split()
    ticked = {f"grant:{s}": "1" for s in provider_scopes}
    params = consent(client, scope=f"email {google_scope()}", granular="1", **ticked)
    body = tokens_after(client, params)
    assert body["scope"].split() == [USERINFO_EMAIL, *provider_scopes]


def test_an_openid_grant_comes_with_an_id_token_google_keys_verify(client):
    params = consent(client, scope=f"openid email {google_scope()}")
    body = tokens_after(client, params)
    token = body["id_token"]
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256"
    keys = client.get("/sandbox/google/oauth2/v3/certs").json()["keys"]
    jwk = next(k for k in keys if k["kid"] == header["kid"])
    key = jwt.algorithms.RSAAlgorithm.from_jwk(jwk)
    claims = jwt.decode(
        token,
        key,
        algorithms=["RS256"],
        audience=google_client()[0],
        issuer="https://accounts.google.com",
    )
    assert claims["email"] == EMAIL
    assert claims["sub"].isdigit() and len(claims["sub"]) == 21
    assert claims["exp"] > claims["iat"]
    info = client.get(USERINFO, **bearer(body["access_token"])).json()
    assert info["sub"] == claims["sub"]


def test_a_grant_without_openid_has_no_id_token(client):
    body = google_tokens(client, scope=google_scope())
    assert "id_token" not in body


def test_userinfo_errors_are_googles_flat_body(client):
    response = client.get(USERINFO, **bearer("ya29.not-a-token"))
    assert response.status_code == 401
    assert response.json() == {
        "error": "invalid_request",
        "error_description": "Invalid Credentials",
    }
    assert response["WWW-Authenticate"].startswith("Bearer")
    tokens = google_tokens(client, scope=f"openid email {google_scope()}")
    fault_set("google", EMAIL, "server_error")
    failed = client.get(USERINFO, **bearer(tokens["access_token"]))
    assert failed.status_code == 500
    assert set(failed.json()) == {"error", "error_description"}


def test_userinfo_may_leave_out_email_verified(client):
    tokens = google_tokens(client, scope=f"openid email {google_scope()}")
    fault_set("google", EMAIL, "userinfo_unverified")
    info = client.get(USERINFO, **bearer(tokens["access_token"])).json()
    assert info["email"] == EMAIL and "email_verified" not in info
    # Once: the next answer has it again.
    assert client.get(USERINFO, **bearer(tokens["access_token"])).json()["email_verified"]


def test_a_testing_apps_refresh_token_expires_with_invalid_grant(client):
    client_id, secret = google_client()
    tokens = google_tokens(client)
    google_account_ensure(EMAIL)
    fault_set("google", EMAIL, "refresh_token_expired")
    response = client.post(
        "/sandbox/google/token",
        {
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": client_id,
            "client_secret": secret,
        },
    )
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_grant",
        "error_description": "Token has been expired or revoked.",
    }


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "http://evil.example/complete/",
        "http://testserver/complete/elsewhere",
        "http://testserver/connect/complete/not-a-provider/",
    ],
)
def test_an_unregistered_redirect_uri_gets_googles_mismatch_page_and_no_redirect(
    client, redirect_uri
):
    query = {
        "client_id": google_client()[0],
        "redirect_uri": redirect_uri,
        "response_type": "code",
        "scope": google_scope(),
    }
    page = client.get(AUTH, query)
    assert page.status_code == 400 and "Location" not in page
    assert "Error 400: redirect_uri_mismatch" in page.content.decode()
    # Posting the consent form straight away redirects nowhere either.
    posted = client.post(AUTH, {**query, "decision": "allow", "email": EMAIL})
    assert posted.status_code == 400 and "Location" not in posted
    assert "redirect_uri_mismatch" in posted.content.decode()


def test_sibling_complete_url_is_registered_for_its_google_client(client, settings):
    from django.urls import reverse

    from .oauth import google_providers

    provider = google_providers()[0]
    complete = reverse("social:complete", args=[provider.id])
    for origin in (settings.SIBLING_PUBLIC_URL, "http://testserver"):
        query = {
            "client_id": google_client()[0],
            "redirect_uri": f"{origin}{complete}",
            "response_type": "code",
            "scope": google_scope(),
        }
        assert client.get(AUTH, query).status_code == 200
    # Another Google provider's complete URL is not this client's.
    for other in google_providers()[1:]:
        query["redirect_uri"] = f"http://testserver{reverse('social:complete', args=[other.id])}"
        assert client.get(AUTH, query).status_code == 400
