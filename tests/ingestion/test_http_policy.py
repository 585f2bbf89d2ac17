"""The retry policy: backoff for transient errors, in-place waits or deferral for rate limits."""

import pytest

from ingestion.errors import (
    AccessExpired,
    Deferred,
    RateLimited,
    ReauthRequired,
    TransientError,
)
from ingestion.http import CallCounter, RetryPolicy, call_with_policy


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
