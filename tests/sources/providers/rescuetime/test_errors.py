"""The key check at connect time goes through the HTTP layer: a bad key is an auth error, a
passing failure is retried once, anything else says the key could not be checked."""

from __future__ import annotations

import pytest

from ingestion.errors import ProviderAuthError, ProviderError
from sources.providers.rescuetime import RescueTime
from tests.scripted_http import Answer, scripted_server

server = pytest.fixture(scripted_server)


@pytest.fixture
def api(server, monkeypatch):
    monkeypatch.setattr(RescueTime, "url", classmethod(lambda cls, name: server.url))
    return server


def test_a_good_key_passes_and_a_bad_one_is_refused(api):
    api.answers(Answer(body=[[1, 3600, 1, 1]]))
    RescueTime.key_check("good-key")
    assert "key=good-key" in api.seen[0]["path"]
    # RescueTime answers a bad key with 200 and an error body.
    api.answers(Answer(body={"error": "# key not found", "messages": "key not found"}))
    with pytest.raises(ProviderAuthError, match="did not accept this key"):
        RescueTime.key_check("bad-key")


def test_a_passing_server_error_is_retried_once(api):
    # Before, one 502 told the person RescueTime could not check the key.
    api.answers(Answer(status=502, body=b"<html>Bad gateway</html>"), Answer(body=[]))
    RescueTime.key_check("good-key")
    assert len(api.seen) == 2


@pytest.mark.parametrize("status", [500, 401, 404])
def test_other_answers_say_the_key_could_not_be_checked(api, status):
    api.answers(Answer(status=status, body={"error": "no"}))
    with pytest.raises(ProviderError) as caught:
        RescueTime.key_check("some-key")
    assert not isinstance(caught.value, ProviderAuthError)
    assert str(caught.value) == "RescueTime could not check the key. Please try again."
    assert "some-key" not in str(caught.value)


def test_an_unreachable_service_or_a_body_that_is_not_json_says_so(api, monkeypatch):
    api.answers(Answer(body=b"<html>maintenance</html>"))
    with pytest.raises(ProviderError, match="could not be reached"):
        RescueTime.key_check("some-key")
    monkeypatch.setattr(RescueTime, "url", classmethod(lambda cls, name: "http://127.0.0.1:9"))
    with pytest.raises(ProviderError, match="could not be reached"):
        RescueTime.key_check("some-key")
