import base64

import pytest

from sources.sandbox.faults import fault_set
from sources.sandbox.google import scope_describe

from .oauth import (
    EMAIL,
    REDIRECT_URI,
    bearer,
    consent,
    exchange,
    google_client,
    google_providers,
    google_scope,
    google_tokens,
    pkce_pair,
)

pytestmark = pytest.mark.django_db

AUTH = "/sandbox/google/o/oauth2/v2/auth"
# The first registered Google provider's client and scopes; a second client where one is needed.
CLIENT = google_client()
SCOPE = google_scope()
USERINFO = "/sandbox/google/oauth2/v3/userinfo"
INVALID_GRANT = {
    "error": "invalid_grant",
    "error_description": "Token has been expired or revoked.",
}


def refresh(client, refresh_token, pair=CLIENT):
    return client.post(
        "/sandbox/google/token",
        {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": pair[0],
            "client_secret": pair[1],
        },
    )


def test_consent_page_is_an_accessible_sandbox_form(client):
    response = client.get(
        AUTH,
        {
            "client_id": CLIENT[0],
            "redirect_uri": REDIRECT_URI,
            "response_type": "code",
            "scope": f"openid email {SCOPE}",
            "state": "s",
            "access_type": "offline",
            "prompt": "consent",
        },
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert '<label for="email">Email</label>' in html
    assert 'value="sandbox.person@example.com"' in html
    assert "Sandbox" in html
    assert scope_describe(SCOPE.split()[0]) in html
    assert ">Allow</button>" in html and ">Deny</button>" in html


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"client_id": "nobody"}, "invalid_client"),
        ({"redirect_uri": ""}, "invalid_request"),
    ],
)
def test_consent_page_rejects_unknown_client_or_missing_redirect(client, params, error):
    query = {
        "client_id": CLIENT[0],
        "redirect_uri": REDIRECT_URI,
        "response_type": "code",
        "scope": SCOPE,
        **params,
    }
    response = client.get(AUTH, query)
    assert response.status_code == 400
    assert error in response.content.decode()


def test_deny_redirects_with_access_denied(client):
    assert consent(client, decision="deny") == {"error": "access_denied", "state": "state-123"}


def test_code_flow_refresh_and_single_use_code(client):
    params = consent(client)
    assert params["state"] == "state-123"
    assert params["scope"] == SCOPE
    tokens = exchange(client, params["code"]).json()
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == 3599
    assert tokens["scope"] == SCOPE
    assert tokens["refresh_token"]

    again = exchange(client, params["code"])
    assert again.status_code == 400
    assert again.json() == INVALID_GRANT

    refreshed = refresh(client, tokens["refresh_token"])
    assert refreshed.status_code == 200
    body = refreshed.json()
    assert "refresh_token" not in body  # Google does not rotate refresh tokens
    assert body["access_token"] != tokens["access_token"]

    info = client.get(USERINFO, **bearer(body["access_token"]))
    assert info.status_code == 200
    user = info.json()
    assert user["email"] == EMAIL and user["email_verified"] is True
    assert user["sub"].isdigit() and len(user["sub"]) == 21
    assert user["given_name"] == "Sandbox" and user["family_name"] == "Person"
    assert client.get(user["picture"].replace("http://testserver", "")).status_code == 200


def test_online_access_gets_no_refresh_token(client):
    params = consent(client, access_type="online")
    assert "refresh_token" not in exchange(client, params["code"]).json()


def test_token_errors(client):
    params = consent(client)
    bad_client = exchange(client, params["code"], client_pair=(CLIENT[0], "wrong"))
    assert bad_client.status_code == 401
    assert bad_client.json()["error"] == "invalid_client"
    assert exchange(client, "4/0-made-up").json() == INVALID_GRANT
    assert refresh(client, "1//0-made-up").json() == INVALID_GRANT
    mismatch = exchange(client, params["code"], redirect_uri="http://elsewhere.example/")
    assert mismatch.status_code == 400
    assert mismatch.json()["error"] == "redirect_uri_mismatch"


def test_basic_auth_and_pkce(client):
    verifier, challenge = pkce_pair()
    params = consent(client, code_challenge=challenge, code_challenge_method="S256")
    basic = base64.b64encode(f"{CLIENT[0]}:{CLIENT[1]}".encode()).decode()
    wrong = client.post(
        "/sandbox/google/token",
        {
            "grant_type": "authorization_code",
            "code": params["code"],
            "redirect_uri": REDIRECT_URI,
            "code_verifier": "x" * 50,
        },
        HTTP_AUTHORIZATION=f"Basic {basic}",
    )
    assert wrong.json() == INVALID_GRANT
    params = consent(client, code_challenge=challenge, code_challenge_method="S256")
    right = client.post(
        "/sandbox/google/token",
        {
            "grant_type": "authorization_code",
            "code": params["code"],
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        },
        HTTP_AUTHORIZATION=f"Basic {basic}",
    )
    assert right.status_code == 200


def test_revoke_refresh_token_ends_access_tokens_too(client):
    tokens = google_tokens(client)
    response = client.post("/sandbox/google/revoke", {"token": tokens["refresh_token"]})
    assert response.status_code == 200 and response.json() == {}
    assert refresh(client, tokens["refresh_token"]).json() == INVALID_GRANT
    info = client.get(USERINFO, **bearer(tokens["access_token"]))
    assert info.status_code == 401
    again = client.post(f"/sandbox/google/revoke?token={tokens['refresh_token']}")
    assert again.status_code == 400
    assert again.json() == {
        "error": "invalid_token",
        "error_description": "Token expired or revoked",
    }


def test_expire_access_token_fault_then_refresh_recovers(client):
    tokens = google_tokens(client)
    fault_set("google", EMAIL, "expire_access_token")
    response = client.get(USERINFO, **bearer(tokens["access_token"]))
    assert response.status_code == 401
    # The userinfo endpoint answers OAuth's flat error body, not the APIs' envelope.
    assert response.json() == {
        "error": "invalid_request",
        "error_description": "Invalid Credentials",
    }
    fresh = refresh(client, tokens["refresh_token"]).json()["access_token"]
    ok = client.get(USERINFO, **bearer(fresh))
    assert ok.status_code == 200


def test_revoke_fault_makes_refresh_fail(client):
    tokens = google_tokens(client)
    fault_set("google", EMAIL, "revoke")
    assert refresh(client, tokens["refresh_token"]).json() == INVALID_GRANT


def test_revoke_needs_the_token(client):
    response = client.post("/sandbox/google/revoke", {})
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"


def test_revoke_of_an_unknown_token_is_invalid_token(client):
    response = client.post("/sandbox/google/revoke", {"token": "1//0-never-issued"})
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_token",
        "error_description": "Token expired or revoked",
    }


def test_revoke_with_the_access_token_ends_the_grant_too(client):
    tokens = google_tokens(client)
    assert (
        client.post("/sandbox/google/revoke", {"token": tokens["access_token"]}).status_code == 200
    )
    assert refresh(client, tokens["refresh_token"]).json() == INVALID_GRANT


def test_server_error_fault_makes_the_revocation_fail_and_leaves_the_grant(client):
    tokens = google_tokens(client)
    fault_set("google", EMAIL, "server_error")
    failed = client.post("/sandbox/google/revoke", {"token": tokens["refresh_token"]})
    assert failed.status_code == 503 and failed.json()["error"] == "temporarily_unavailable"
    assert refresh(client, tokens["refresh_token"]).status_code == 200
    assert (
        client.post("/sandbox/google/revoke", {"token": tokens["refresh_token"]}).status_code == 200
    )
    assert refresh(client, tokens["refresh_token"]).json() == INVALID_GRANT


def _basic(pair) -> dict:
    raw = base64.b64encode(f"{pair[0]}:{pair[1]}".encode()).decode()
    return {"HTTP_AUTHORIZATION": f"Basic {raw}"}


def test_strict_rfc7009_revocation_requires_client_authentication(client, settings):
    settings.SIBLING_SANDBOX_RFC7009_CLIENTS = {CLIENT[0]}
    tokens = google_tokens(client)
    alone = client.post("/sandbox/google/revoke", {"token": tokens["refresh_token"]})
    assert alone.status_code == 401 and alone.json()["error"] == "invalid_client"
    wrong = client.post(
        "/sandbox/google/revoke",
        {"token": tokens["refresh_token"]},
        **_basic((CLIENT[0], "wrong")),
    )
    assert wrong.status_code == 401
    assert refresh(client, tokens["refresh_token"]).status_code == 200

    done = client.post(
        "/sandbox/google/revoke",
        {"token": tokens["refresh_token"], "token_type_hint": "refresh_token"},
        **_basic(CLIENT),
    )
    assert done.status_code == 200
    assert refresh(client, tokens["refresh_token"]).json() == INVALID_GRANT
    # RFC 7009: an invalid or already revoked token is answered 200 as well.
    again = client.post(
        "/sandbox/google/revoke", {"token": tokens["refresh_token"]}, **_basic(CLIENT)
    )
    assert again.status_code == 200


def test_strict_rfc7009_client_secret_post_and_another_clients_token(client, settings):
    if len(google_providers()) < 2:
        pytest.skip("needs two registered Google providers")
    other = google_client(google_providers()[1])
    settings.SIBLING_SANDBOX_RFC7009_CLIENTS = {CLIENT[0], other[0]}
    tokens = google_tokens(client)
    # Another client's credentials do not revoke this client's token (RFC 7009 section 2.1).
    foreign = client.post(
        "/sandbox/google/revoke",
        {
            "token": tokens["refresh_token"],
            "client_id": other[0],
            "client_secret": other[1],
        },
    )
    assert foreign.status_code == 200
    assert refresh(client, tokens["refresh_token"]).status_code == 200
    own = client.post(
        "/sandbox/google/revoke",
        {
            "token": tokens["refresh_token"],
            "client_id": CLIENT[0],
            "client_secret": CLIENT[1],
        },
    )
    assert own.status_code == 200
    assert refresh(client, tokens["refresh_token"]).json() == INVALID_GRANT


def test_every_google_provider_signs_in_at_the_one_server(client):
    """Each registered Google provider's sandbox client gets tokens for its own scopes."""
    for provider in google_providers():
        pair = google_client(provider)
        tokens = google_tokens(client, scope=google_scope(provider), client_pair=pair)
        assert tokens["scope"] == google_scope(provider)
        assert client.get(USERINFO, **bearer(tokens["access_token"])).status_code == 200
