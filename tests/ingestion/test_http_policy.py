"""The retry policy: backoff for transient errors, in-place waits or deferral for rate limits;
one error hierarchy; one timeout for every provider call."""

import pytest
import requests

from ingestion.errors import (
    AccessExpired,
    Deferred,
    PermanentError,
    PersonErased,
    ProviderAuthError,
    ProviderError,
    RateLimited,
    ReauthRequired,
    RevocationError,
    SyncError,
    TransientError,
    error_code_safe,
)
from ingestion.http import (
    CallCounter,
    ProviderHttp,
    RetryPolicy,
    call_with_policy,
    connect_policy,
    provider_timeout,
)
from sources import providers
from sources.providers import base
from tests.scripted_http import Answer, scripted_server


def failing(*errors, result="ok"):
    queue = list(errors)

    def call():
        if queue:
            raise queue.pop(0)
        return result

    return call


@pytest.fixture
def waits():
    slept: list[float] = []
    return slept, RetryPolicy(max_attempts=4, base_delay_s=1, max_delay_s=4, sleep=slept.append)


def test_transient_errors_are_retried_with_growing_jittered_backoff(waits):
    slept, policy = waits
    assert call_with_policy(failing(*[TransientError("503")] * 3), policy=policy) == "ok"
    assert len(slept) == 3
    assert 0.5 <= slept[0] <= 1 and 1 <= slept[1] <= 2 and 2 <= slept[2] <= 4


def test_retries_are_bounded(waits):
    slept, policy = waits
    with pytest.raises(TransientError):
        call_with_policy(failing(*[TransientError("503")] * 10), policy=policy)
    assert len(slept) == 3  # four attempts


def test_a_short_rate_limit_is_waited_out_in_place(waits):
    slept, policy = waits
    counter = CallCounter()
    result = call_with_policy(
        failing(RateLimited("429", retry_after_s=2)), policy=policy, counter=counter
    )
    assert result == "ok" and slept == [2] and counter.rate_limited == 1


def test_a_long_rate_limit_defers_the_connection(waits):
    slept, policy = waits
    with pytest.raises(Deferred) as excinfo:
        call_with_policy(failing(RateLimited("429", retry_after_s=3600)), policy=policy)
    assert slept == []
    assert excinfo.value.until is not None


def test_an_expired_token_is_refreshed_once(waits):
    _, policy = waits
    refreshed = []
    result = call_with_policy(
        failing(AccessExpired("401")), policy=policy, refresh=lambda: refreshed.append(1)
    )
    assert result == "ok" and refreshed == [1]
    with pytest.raises(ReauthRequired):
        call_with_policy(
            failing(AccessExpired("401"), AccessExpired("401")), policy=policy, refresh=lambda: None
        )


# --- The connect policy: a person is waiting -----------------------------------------------------


def test_a_connect_call_is_tried_twice_and_never_waits_long():
    slept: list[float] = []
    policy = connect_policy()
    policy.sleep = slept.append
    with pytest.raises(TransientError):
        call_with_policy(failing(*[TransientError("503")] * 5), policy=policy)
    assert len(slept) == 1 and slept[0] <= 0.5
    # A rate limit longer than a second is not waited out while a person waits.
    with pytest.raises(Deferred):
        call_with_policy(failing(RateLimited("429", retry_after_s=30)), policy=policy)
    assert len(slept) == 1


def test_a_refused_token_without_a_refresh_is_reauth_required():
    with pytest.raises(ReauthRequired) as caught:
        call_with_policy(failing(AccessExpired("X refused the access token")), policy=RetryPolicy())
    assert "refused the access token" in str(caught.value)


# --- One error hierarchy -------------------------------------------------------------------------


def test_one_hierarchy_for_connect_time_calls_and_syncs():
    # Every failed provider call is a ProviderError (its message safe to show) and a SyncError
    # (the runner stores its message); "the person must reconnect" has one class, two names.
    assert ProviderAuthError is ReauthRequired
    for error in (TransientError, RateLimited, Deferred, AccessExpired, ReauthRequired):
        assert issubclass(error, ProviderError) and issubclass(error, SyncError)
    assert issubclass(RevocationError, ProviderError)
    assert not issubclass(PersonErased, ProviderError) and issubclass(PersonErased, SyncError)
    # Callers that import the names from sources.providers get the same classes.
    assert providers.ProviderError is ProviderError
    assert providers.ProviderAuthError is ReauthRequired
    assert base.RevocationError is RevocationError and base.error_code_safe is error_code_safe


def test_a_view_catching_provider_errors_catches_what_the_http_layer_raises():
    for error in (TransientError("x"), RateLimited("x"), PermanentError("x"), ReauthRequired("x")):
        try:
            raise error
        except ProviderAuthError:
            assert isinstance(error, ReauthRequired)
        except ProviderError:
            assert not isinstance(error, ReauthRequired)


# --- One timeout, through ProviderHttp -----------------------------------------------------------

server = pytest.fixture(scripted_server)


def test_every_call_waits_at_most_the_provider_timeout_setting(server, settings):
    # The answer comes after 3 s; the read timeout is a fraction of that.
    settings.SIBLING_PROVIDER_TIMEOUT_S = (2.0, 0.3)
    server.answers(Answer(stall_s=3))
    http = ProviderHttp.for_connect(provider_name="Example")
    with http, pytest.raises(TransientError, match="Example could not be reached") as caught:
        http.get_json(f"{server.url}/slow")
    assert isinstance(caught.value.__cause__, requests.ReadTimeout)
    assert http.counter.calls == 2  # the connect policy's two attempts


def test_a_connect_call_is_retried_once_after_a_5xx(server):
    server.answers(Answer(status=503, body={}), Answer(body={"id": "a1"}))
    with ProviderHttp.for_connect(provider_name="Example", bearer=lambda: "t0ken") as http:
        assert http.get_json(f"{server.url}/me") == {"id": "a1"}
    assert [seen["headers"]["Authorization"] for seen in server.seen] == ["Bearer t0ken"] * 2


def test_the_provider_timeout_setting_comes_from_the_environment():
    assert isinstance(provider_timeout(), tuple) and len(provider_timeout()) == 2
