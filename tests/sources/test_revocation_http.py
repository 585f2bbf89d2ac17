"""Revocation through the HTTP layer: the provider timeout bounds the wait, and the error names
the network error's class, never the request that carries the token."""

from __future__ import annotations

import pytest

from ingestion.errors import RevocationError
from sources.providers.base import OAuth2Provider
from tests.scripted_http import Answer, scripted_server

server = pytest.fixture(scripted_server)


def provider_at(url: str) -> type[OAuth2Provider]:
    return type(
        "Generic",
        (OAuth2Provider,),
        {
            "id": "generic",
            "name": "Generic",
            "category": "external",
            "url": classmethod(lambda cls, name: url),
            "client_credentials": classmethod(lambda cls: {"client_id": "c", "client_secret": "s"}),
        },
    )


def test_a_provider_that_does_not_answer_in_time_is_not_a_revocation(server, settings):
    # Before, every revocation waited 15 s whatever the setting.
    settings.SIBLING_PROVIDER_TIMEOUT_S = (2.0, 0.3)
    server.answers(Answer(stall_s=3))
    with pytest.raises(RevocationError) as caught:
        provider_at(f"{server.url}/revoke").revoke({"refresh_token": "rt-secret"})
    assert caught.value.code == "ReadTimeout"
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert "rt-secret" not in f"{caught.value} {caught.value!r}"


def test_one_attempt_a_failure_is_kept_for_the_retries_with_backoff(server):
    server.answers(Answer(status=503, body={"error": "temporarily_unavailable"}), Answer())
    with pytest.raises(RevocationError) as caught:
        provider_at(f"{server.url}/revoke").revoke({"refresh_token": "rt"})
    assert caught.value.code == "503 temporarily_unavailable" and len(server.seen) == 1
