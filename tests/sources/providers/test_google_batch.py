"""Google's batch format, read and written once for every Google API (the guide's examples,
google-api-python-client's LF line ends), and the caller's handling of each part's answer: kept,
gone, retried alone after its wait, deferred, refreshed once, charged per part."""

from __future__ import annotations

import json

import pytest
import requests

from ingestion.errors import Deferred, PermanentError, ReauthRequired, TransientError
from ingestion.http import CallCounter, ProviderHttp, RetryPolicy
from sources.providers.google_batch import (
    BatchCall,
    BatchFormatError,
    batch_call,
    batch_decode,
    batch_encode,
    boundary_of,
    content_id_key,
    http_message_split,
    multipart_parts,
    part_split,
)
from sources.providers.google_http import google_check

API = "https://example.googleapis.com/example/v1"
BATCH = "https://example.googleapis.com/batch/example/v1"

# The shape of the guide's answer: the outer 200, each part a whole HTTP response named by the
# request's Content-ID with "response-", not in the order asked.
GUIDE_ANSWER = (
    b"--batch_pK7JBAk73-E=_AA5eFwv4m2Q=\r\n"
    b"Content-Type: application/http\r\n"
    b"Content-ID: <response-item2>\r\n"
    b"\r\n"
    b"HTTP/1.1 404 Not Found\r\n"
    b"Content-Type: application/json; charset=UTF-8\r\n"
    b"\r\n"
    b'{"error": {"code": 404, "message": "Requested entity was not found.", '
    b'"errors": [{"reason": "notFound", "domain": "global"}], "status": "NOT_FOUND"}}\r\n'
    b"--batch_pK7JBAk73-E=_AA5eFwv4m2Q=\r\n"
    b"Content-Type: application/http\r\n"
    b"Content-ID: <response-item1>\r\n"
    b"\r\n"
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: 34\r\n"
    b"\r\n"
    b'{"id": "18c1f", "threadId": "18c1"}\r\n'
    b"--batch_pK7JBAk73-E=_AA5eFwv4m2Q=--\r\n"
)
GUIDE_TYPE = 'multipart/mixed; boundary="batch_pK7JBAk73-E=_AA5eFwv4m2Q="'


def test_a_request_holds_path_only_calls_named_by_content_id():
    calls = [
        BatchCall("a", f"{API}/things/1", params={"format": "metadata", "h": ["From", "To"]}),
        BatchCall("b", f"{API}/things/2?view=full"),
    ]
    content_type, body = batch_encode(calls, boundary="batch_foo")
    assert content_type == "multipart/mixed; boundary=batch_foo"
    parts = multipart_parts(body, boundary_of(content_type))
    assert len(parts) == 2
    headers, content = part_split(parts[0])
    assert headers["Content-Type"] == "application/http" and headers["Content-ID"] == "<a>"
    start, inner_headers, inner_body = http_message_split(content)
    # The path only: no scheme or host, the query kept in order, lists repeated.
    assert start == b"GET /example/v1/things/1?format=metadata&h=From&h=To HTTP/1.1"
    assert (dict(inner_headers), inner_body) == ({}, b"")
    assert http_message_split(part_split(parts[1])[1])[0] == (
        b"GET /example/v1/things/2?view=full HTTP/1.1"
    )
    assert body.endswith(b"--batch_foo--\r\n")


def test_an_answer_is_paired_by_content_id_not_position():
    answers = batch_decode(GUIDE_TYPE, GUIDE_ANSWER)
    assert set(answers) == {"item1", "item2"}
    assert answers["item1"].status == 200 and answers["item1"].reason == "OK"
    assert json.loads(answers["item1"].body) == {"id": "18c1f", "threadId": "18c1"}
    gone = answers["item2"].response()
    assert gone.status_code == 404
    assert gone.headers["content-type"].startswith("application/json")
    assert gone.json()["error"]["errors"][0]["reason"] == "notFound"


def test_lf_line_ends_and_preambles_are_read():
    # google-api-python-client writes its bodies with LF only.
    body = GUIDE_ANSWER.replace(b"\r\n", b"\n")
    answers = batch_decode(GUIDE_TYPE, b"a preamble\n" + body)
    assert answers["item1"].status == 200 and answers["item2"].status == 404
    assert json.loads(answers["item1"].body)["id"] == "18c1f"


def test_what_is_not_a_batch_is_refused():
    assert boundary_of("application/json") is None
    assert boundary_of("multipart/mixed") is None
    assert boundary_of("Multipart/Mixed; charset=x; boundary=abc") == "abc"
    with pytest.raises(BatchFormatError):
        batch_decode("text/html", b"<html>")
    with pytest.raises(BatchFormatError):  # cut before the closing delimiter
        batch_decode(GUIDE_TYPE, GUIDE_ANSWER[:-40])


@pytest.mark.parametrize(
    ("header", "key"),
    [("<item1>", "item1"), ("<response-item1>", "item1"), ("item1", "item1"), ("", None)],
)
def test_content_id_keys(header, key):
    assert content_id_key(header) == key


# --- The caller -------------------------------------------------------------------------------


def part(key: str, status: int, body: object, headers: dict[str, str] | None = None) -> bytes:
    lines = [
        "Content-Type: application/http",
        f"Content-ID: <response-{key}>",
        "",
        f"HTTP/1.1 {status} X",
        "Content-Type: application/json; charset=UTF-8",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
        "",
        json.dumps(body),
    ]
    return "\r\n".join(lines).encode()


def error(status: int, reason: str, api_status: str = "") -> dict:
    body = {"code": status, "message": "m", "errors": [{"reason": reason, "domain": "global"}]}
    return {"error": {**body, **({"status": api_status} if api_status else {})}}


def answer(*parts: bytes, status: int = 200, content_type: str | None = None) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response.headers["Content-Type"] = content_type or "multipart/mixed; boundary=zz"
    response._content = b"".join(b"--zz\r\n" + p + b"\r\n" for p in parts) + b"--zz--\r\n"
    return response


class FakeSession:
    """Answers each request with the next prepared answer; keeps what was sent."""

    def __init__(self, *answers: requests.Response) -> None:
        self.answers = list(answers)
        self.sent: list[dict] = []

    def request(self, method, url, *, headers=None, timeout=None, data=b"", **kwargs):
        parts = multipart_parts(data, boundary_of(headers["Content-Type"]))
        keys = [content_id_key(part_split(p)[0]["Content-ID"]) for p in parts]
        self.sent.append({"url": url, "keys": keys, "authorization": headers["Authorization"]})
        return self.answers.pop(0)

    def close(self) -> None:
        pass


class Budget:
    def __init__(self) -> None:
        self.charged: list[tuple[str, int]] = []
        self.observed: list[int] = []

    def charge(self, operation: str, count: int = 1) -> float:
        self.charged.append((operation, count))
        return 0.0

    def observe(self, response: requests.Response) -> None:
        self.observed.append(response.status_code)


class Tokens:
    def __init__(self) -> None:
        self.token = "first"
        self.refreshes = 0

    def bearer(self) -> str:
        return self.token

    def refresh(self) -> None:
        self.refreshes += 1
        self.token = f"refreshed-{self.refreshes}"


def session(*answers: requests.Response, **policy) -> tuple[ProviderHttp, FakeSession]:
    tokens = Tokens()
    sleeps: list[float] = []
    http = ProviderHttp(
        provider_name="Example",
        policy=RetryPolicy(sleep=sleeps.append, **policy),
        counter=CallCounter(),
        check=lambda response: google_check(response, provider_name="Example"),
        bearer=tokens.bearer,
        refresh=tokens.refresh,
        budget=Budget(),
    )
    fake = FakeSession(*answers)
    http.session = fake
    http.sleeps = sleeps
    http.tokens = tokens
    return http, fake


def calls(*keys: str) -> list[BatchCall]:
    return [BatchCall(key, f"{API}/things/{key}") for key in keys]


def test_kept_gone_and_failed_parts_each_get_their_own_treatment():
    http, fake = session(
        answer(
            part("d", 503, error(503, "backendError", "UNAVAILABLE")),
            part("c", 429, error(429, "rateLimitExceeded"), {"Retry-After": "2"}),
            part("b", 404, error(404, "notFound", "NOT_FOUND")),
            part("a", 200, {"id": "a"}),
        ),
        answer(part("c", 200, {"id": "c"}), part("d", 200, {"id": "d"})),
        max_inplace_wait_s=5,
    )
    results = batch_call(http, BATCH, calls("a", "b", "c", "d"), operation="things.get")
    assert results == {"a": {"id": "a"}, "b": None, "c": {"id": "c"}, "d": {"id": "d"}}
    # The failed parts alone, once, after the longer of their waits (Retry-After over backoff).
    assert [s["keys"] for s in fake.sent] == [["a", "b", "c", "d"], ["c", "d"]]
    assert http.sleeps == [2.0]
    # Charged per part, the retried parts again; each failed part shown to the budget too.
    assert http.budget.charged == [("things.get", 4), ("things.get", 2)]
    assert sorted(http.budget.observed) == [200, 200, 404, 429, 503]  # two outer answers
    assert (http.counter.calls, http.counter.rate_limited) == (2, 1)


def test_a_403_rate_reason_without_retry_after_waits_the_default_or_defers():
    limited = part("a", 403, error(403, "userRateLimitExceeded"))
    http, fake = session(answer(limited))
    with pytest.raises(Deferred) as caught:
        batch_call(http, BATCH, calls("a"), operation="things.get")
    assert "rate limit" in str(caught.value)
    assert len(fake.sent) == 1 and http.sleeps == []

    http, fake = session(answer(limited), answer(part("a", 200, {})), max_inplace_wait_s=60)
    assert batch_call(http, BATCH, calls("a"), operation="things.get") == {"a": {}}
    assert http.sleeps == [30.0]


def test_expired_parts_refresh_the_token_once():
    expired = part("a", 401, error(401, "authError", "UNAUTHENTICATED"))
    http, fake = session(answer(expired, part("b", 200, {})), answer(part("a", 200, {"ok": 1})))
    assert batch_call(http, BATCH, calls("a", "b"), operation="things.get") == {
        "a": {"ok": 1},
        "b": {},
    }
    assert [s["authorization"] for s in fake.sent] == ["Bearer first", "Bearer refreshed-1"]
    assert http.sleeps == []

    http, fake = session(answer(expired), answer(expired))
    with pytest.raises(ReauthRequired):
        batch_call(http, BATCH, calls("a"), operation="things.get")
    assert http.tokens.refreshes == 1


def test_server_errors_stop_after_the_policy_attempts_and_refusals_raise():
    failing = answer(part("a", 500, error(500, "backendError")))
    http, fake = session(failing, failing, failing, max_attempts=3)
    with pytest.raises(TransientError):
        batch_call(http, BATCH, calls("a"), operation="things.get")
    assert len(fake.sent) == 3 and len(http.sleeps) == 2

    http, _ = session(answer(part("a", 403, error(403, "forbidden"))))
    with pytest.raises(PermanentError):
        batch_call(http, BATCH, calls("a"), operation="things.get")


def test_missing_parts_and_unreadable_answers_are_sent_again():
    page = answer(status=200, content_type="text/html")
    page._content = b"<html>proxy</html>"
    http, fake = session(
        page, answer(part("a", 200, {"id": "a"})), answer(part("b", 200, {"id": "b"}))
    )
    results = batch_call(http, BATCH, calls("a", "b"), operation="things.get")
    assert results == {"a": {"id": "a"}, "b": {"id": "b"}}
    assert [s["keys"] for s in fake.sent] == [["a", "b"], ["a", "b"], ["b"]]


def test_a_batch_holds_at_most_100_distinct_calls():
    http, fake = session()
    with pytest.raises(ValueError):
        batch_call(http, BATCH, calls(*(str(n) for n in range(101))), operation="things.get")
    with pytest.raises(ValueError):
        batch_call(http, BATCH, calls("a", "a"), operation="things.get")
    assert fake.sent == []
