"""Google's error envelope read once, for every Google API: what each answer makes the caller do.

The bodies are Google's documented shapes (the legacy errors[].reason list, the newer ErrorInfo
details, or both)."""

from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import requests

from ingestion.errors import AccessExpired, PermanentError, RateLimited, TransientError
from sources.providers.google_http import (
    LONG_LIMIT_WAIT_S,
    Gone,
    NotFound,
    google_check,
    google_error_fields,
    seconds_to_quota_reset,
)


def answer(status: int, body: object = None, headers: dict[str, str] | None = None):
    response = requests.Response()
    response.status_code = status
    response.headers.update(headers or {})
    response._content = body if isinstance(body, bytes) else json.dumps(body or {}).encode()
    return response


def legacy(status: int, reason: str, *, domain: str = "usageLimits") -> requests.Response:
    return answer(
        status,
        {
            "error": {
                "code": status,
                "message": "m",
                "errors": [{"domain": domain, "reason": reason, "message": "m"}],
            }
        },
    )


def error_info(status: int, api_status: str, reason: str = "") -> requests.Response:
    details = (
        [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason}] if reason else []
    )
    body = {"error": {"code": status, "message": "m", "status": api_status, "details": details}}
    return answer(status, body)


def check(response: requests.Response) -> None:
    google_check(response, provider_name="Example")


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (legacy(401, "authError", domain="global"), AccessExpired),
        (legacy(403, "userRateLimitExceeded"), RateLimited),
        (legacy(403, "rateLimitExceeded"), RateLimited),
        (legacy(429, "rateLimitExceeded"), RateLimited),
        (legacy(403, "quotaExceeded"), RateLimited),
        (legacy(403, "dailyLimitExceeded"), RateLimited),
        (error_info(429, "RESOURCE_EXHAUSTED"), RateLimited),
        (error_info(403, "PERMISSION_DENIED", "RATE_LIMIT_EXCEEDED"), RateLimited),
        (legacy(500, "backendError"), TransientError),
        (legacy(503, "backendError"), TransientError),
        # A backend error is worth a retry whatever status carries it.
        (legacy(403, "backendError"), TransientError),
        (error_info(504, "DEADLINE_EXCEEDED"), TransientError),
        (legacy(404, "notFound", domain="global"), NotFound),
        (legacy(410, "fullSyncRequired", domain="calendar"), Gone),
        (legacy(403, "insufficientPermissions", domain="global"), PermanentError),
        (error_info(403, "PERMISSION_DENIED", "ACCESS_TOKEN_SCOPE_INSUFFICIENT"), PermanentError),
        (error_info(400, "FAILED_PRECONDITION", "ACCOUNT_NOT_LINKED"), PermanentError),
    ],
)
def test_each_answer_maps_to_what_the_caller_does(response, expected):
    with pytest.raises(expected) as caught:
        check(response)
    if expected is PermanentError:
        assert not isinstance(caught.value, RateLimited | NotFound | Gone)
    assert str(caught.value).startswith("Example ")


def test_success_passes_and_a_body_that_is_not_json_maps_by_status():
    check(answer(200, {"ok": True}))
    check(answer(204, b""))
    with pytest.raises(TransientError):
        check(answer(502, b"<html>Bad gateway</html>"))
    with pytest.raises(PermanentError):
        check(answer(400, b"<html>Bad request</html>"))


def test_the_reasons_of_both_envelopes_are_read_and_named_in_the_message():
    body = {
        "error": {
            "status": "RESOURCE_EXHAUSTED",
            "errors": [{"reason": "rateLimitExceeded"}],
            "details": [{"reason": "RATE_LIMIT_EXCEEDED"}, "not a dict"],
        }
    }
    reasons, status = google_error_fields(answer(429, body))
    assert reasons == {"rateLimitExceeded", "RATE_LIMIT_EXCEEDED"}
    assert status == "RESOURCE_EXHAUSTED"
    assert google_error_fields(answer(500, {"error": "a string"})) == (frozenset(), "")
    with pytest.raises(NotFound) as caught:
        check(legacy(404, "notFound"))
    assert caught.value.reasons == {"notFound"} and "notFound" in str(caught.value)


def test_a_410_tells_the_caller_to_sync_in_full_again():
    with pytest.raises(Gone) as caught:
        check(legacy(410, "fullSyncRequired", domain="calendar"))
    assert "fullSyncRequired" in caught.value.reasons


def test_retry_after_is_honoured_and_longer_limits_wait_longer():
    with pytest.raises(RateLimited) as caught:
        check(answer(403, legacy(403, "userRateLimitExceeded").json(), {"Retry-After": "12"}))
    assert caught.value.retry_after_s == 12.0
    with pytest.raises(RateLimited) as caught:
        check(legacy(403, "userRateLimitExceeded"))
    assert caught.value.retry_after_s is None  # the HTTP layer's default wait applies
    with pytest.raises(RateLimited) as caught:
        check(legacy(403, "quotaExceeded"))
    assert caught.value.retry_after_s == LONG_LIMIT_WAIT_S
    # A daily quota is spent until it resets: the wait reaches the next Pacific midnight.
    with pytest.raises(RateLimited) as caught:
        check(legacy(403, "dailyLimitExceeded"))
    assert 60 <= caught.value.retry_after_s <= 25 * 3600


def test_daily_quotas_reset_at_midnight_pacific_time_across_a_clock_change():
    pacific = ZoneInfo("America/Los_Angeles")
    assert seconds_to_quota_reset(datetime(2026, 6, 1, 23, 0, tzinfo=pacific)) == 3600
    # 2026-11-01 has 25 hours in Los Angeles (the clocks go back at 02:00).
    assert seconds_to_quota_reset(datetime(2026, 11, 1, 0, 0, tzinfo=pacific)) == 25 * 3600


def test_a_reason_that_is_not_googles_vocabulary_reaches_no_message_as_sent():
    """A proxy or a misbehaving endpoint may answer in Google's envelope with any text in it:
    what goes into the message (shown to the person, stored on the run) is cut to a code."""
    sent = "badRequest\nAuthorization: Bearer ya29.secret-token <b>"
    with pytest.raises(PermanentError) as raised:
        check(legacy(400, sent, domain="global"))
    message = str(raised.value)
    assert "ya29" not in message and "Bearer" not in message and "<" not in message
    assert message == "Example answered 400 (error)"
