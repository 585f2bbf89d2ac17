"""Bad input to the shared sandbox (Google's OAuth server) gets a 4xx, never a 500.

Each provider's imitation has its own bad-input test in tests/sources/providers/<id>/."""

import pytest

from .oauth import google_client

pytestmark = pytest.mark.django_db


def test_token_revoke_and_consent(client):
    client_id, secret = google_client()
    creds = {"client_id": client_id, "client_secret": secret}
    assert (
        client.post("/sandbox/google/token", {"grant_type": "refresh_token", **creds}).status_code
        == 400
    )
    assert (
        client.post("/sandbox/google/token", {"grant_type": "password", **creds}).status_code == 400
    )
    assert client.post("/sandbox/google/token", HTTP_AUTHORIZATION="Basic !!!").status_code == 401
    assert client.post("/sandbox/google/revoke").status_code == 400
    bad_redirect = {
        "client_id": client_id,
        "redirect_uri": "javascript:alert(1)",
        "response_type": "code",
        "scope": "email",
    }
    assert client.get("/sandbox/google/o/oauth2/v2/auth", bad_redirect).status_code == 400
    bad_email = {
        **bad_redirect,
        "redirect_uri": "http://testserver/complete/",
        "decision": "allow",
        "email": "bad",
    }
    assert client.post("/sandbox/google/o/oauth2/v2/auth", bad_email).status_code == 400
