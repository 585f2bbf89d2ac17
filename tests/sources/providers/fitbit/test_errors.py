"""The identity lookup at connect time goes through the HTTP layer: one quick retry, Google's
error mapping, the provider timeout."""

from __future__ import annotations

import pytest

from ingestion.errors import ProviderAuthError, ProviderError
from sources.providers.fitbit import Fitbit
from tests.scripted_http import Answer, scripted_server

server = pytest.fixture(scripted_server)
CREDENTIALS = {"access_token": "at-identity", "refresh_token": "rt"}


@pytest.fixture
def api(server, monkeypatch):
    monkeypatch.setattr(Fitbit, "url", classmethod(lambda cls, name: f"{server.url}/v4"))
    return server


def lookup() -> str:
    return Fitbit.external_account_id(uid="person@example.com", credentials=CREDENTIALS)


def test_the_health_user_id_is_read_with_the_new_access_token(api):
    api.answers(Answer(body={"healthUserId": "h-123", "legacyUserId": "ABC123"}))
    assert lookup() == "h-123"
    (seen,) = api.seen
    assert seen["path"] == "/v4/users/me/identity"
    assert seen["headers"]["Authorization"] == "Bearer at-identity"


def test_a_passing_server_error_is_retried_once(api):
    # Before, one 503 failed the whole connect.
    api.answers(
        Answer(status=503, body={"error": {"code": 503, "status": "UNAVAILABLE"}}),
        Answer(body={"healthUserId": "h-456"}),
    )
    assert lookup() == "h-456" and len(api.seen) == 2


def test_a_refused_token_is_an_auth_error_and_a_missing_id_a_provider_error(api):
    api.answers(Answer(status=401, body={"error": {"code": 401, "status": "UNAUTHENTICATED"}}))
    with pytest.raises(ProviderAuthError):
        lookup()
    assert len(api.seen) == 1  # no token to refresh at connect time: not retried
    api.answers(Answer(body={"legacyUserId": "ABC123"}))
    with pytest.raises(ProviderError, match="did not tell which account"):
        lookup()


def test_a_profile_that_is_not_linked_is_a_provider_error(api):
    body = {
        "error": {
            "code": 400,
            "status": "FAILED_PRECONDITION",
            "details": [{"reason": "ACCOUNT_NOT_LINKED"}],
        }
    }
    api.answers(Answer(status=400, body=body))
    with pytest.raises(ProviderError) as caught:
        lookup()
    assert "ACCOUNT_NOT_LINKED" in str(caught.value) and "at-identity" not in str(caught.value)
