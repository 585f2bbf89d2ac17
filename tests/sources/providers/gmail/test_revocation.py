"""Gmail's revocation against the sandbox over HTTP: Google's token alone, "already revoked"
counting as done, and what a strict RFC 7009 server would need instead."""

import uuid

import pytest
import requests

from sources.providers.base import RevocationError
from sources.providers.gmail import Gmail
from sources.sandbox.faults import fault_set
from sources.sandbox.testing import google_credentials
from tests.sources.providers.kit import token_refresh

pytestmark = pytest.mark.django_db(transaction=True)


def _refresh(refresh_token: str) -> requests.Response:
    return token_refresh(Gmail, refresh_token)


def _email() -> str:
    return f"revoke-{uuid.uuid4().hex[:8]}@example.com"


def test_google_revocation_ends_the_grant_and_a_second_one_counts_as_done(sandbox):
    credentials = google_credentials(Gmail, _email())
    assert _refresh(credentials["refresh_token"]).status_code == 200
    Gmail.revoke(credentials)
    refused = _refresh(credentials["refresh_token"])
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    # Google answers 400 invalid_token now: already revoked, which is what was asked.
    Gmail.revoke(credentials)


def test_google_unavailable_is_not_a_revocation(sandbox):
    email = _email()
    credentials = google_credentials(Gmail, email)
    fault_set("google", email, "server_error")
    with pytest.raises(RevocationError) as caught:
        Gmail.revoke(credentials)
    assert caught.value.code == "503 temporarily_unavailable"
    assert _refresh(credentials["refresh_token"]).status_code == 200  # the grant is alive
    Gmail.revoke(credentials)
    assert _refresh(credentials["refresh_token"]).status_code == 400


class StrictGmail(Gmail):
    """Gmail's client, as a generic RFC 7009 provider would revoke."""

    revocation_client_auth = "client_secret_basic"
    revocation_sends_hint = True
    revocation_already_revoked = frozenset()


def test_a_strict_rfc7009_server_refuses_the_token_alone_and_takes_client_auth(sandbox, settings):
    settings.SIBLING_SANDBOX_RFC7009_CLIENTS = {Gmail.client_credentials()["client_id"]}
    credentials = google_credentials(Gmail, _email())
    # What the old code did: the token alone, refused, and the grant stayed alive.
    with pytest.raises(RevocationError) as caught:
        Gmail.revoke(credentials)
    assert caught.value.code == "401 invalid_client"
    assert _refresh(credentials["refresh_token"]).status_code == 200

    StrictGmail.revoke(credentials)
    assert _refresh(credentials["refresh_token"]).json()["error"] == "invalid_grant"
    StrictGmail.revoke(credentials)  # RFC 7009: 200 for a token already invalid

    other = google_credentials(Gmail, _email())
    type("PostGmail", (StrictGmail,), {"revocation_client_auth": "client_secret_post"}).revoke(
        other
    )
    assert _refresh(other["refresh_token"]).status_code == 400
