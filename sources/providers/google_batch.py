"""Google's batch requests: several calls of one API in one HTTP request, each answered alone.

Google's batch format, the same for every Google API with a ``batchPath`` (each API's guide
describes it, e.g. https://developers.google.com/workspace/drive/api/guides/performance): the
request is ``multipart/mixed``; each part is ``Content-Type: application/http`` with an optional
``Content-ID`` and holds a whole HTTP request whose target is the **path only**. Headers of the
outer request (``Authorization``) apply to every part unless the part sets its own; the outer
``Content-*`` headers do not. The answer is one ``multipart/mixed`` response whose parts are whole
HTTP responses, each with the ``Content-ID`` of its request prefixed with ``response-``, in any
order: parts are paired by that id, never by position.

Each part carries its own status and Google error envelope while the outer answer is 200, so
``batch_call`` reads each one with the provider's own check (``google_check``): a 200 is kept, a
404 means the resource is gone (``None``), a 401 refreshes the token once, a rate limit (429 or a
403 rate reason) and a 5xx/``backendError`` are sent again alone, after a wait. "A set of n
requests batched together counts toward your usage limit as n requests": each round is charged
to the budgets as ``count`` calls of its operation, a round of retried parts as those parts.

The codec (``batch_encode``, ``multipart_parts``, ``http_message_split``) is shared with the
sandbox's batch endpoint (``sources.sandbox.google_batch``).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests
from django.utils import timezone
from requests.structures import CaseInsensitiveDict

from ingestion.errors import (
    AccessExpired,
    Deferred,
    RateLimited,
    ReauthRequired,
    TransientError,
)
from ingestion.http import DEFAULT_RATE_LIMIT_WAIT_S, ProviderHttp
from sources.providers.google_http import NotFound

# "You're limited to 100 calls in a single batch request"; "sending batches larger than 50
# requests is not recommended" (larger ones are likely to be rate limited).
MAX_BATCH_CALLS = 100
RECOMMENDED_BATCH_CALLS = 50

_BOUNDARY = re.compile(r"""boundary\s*=\s*(?:"([^"]+)"|([^;\s]+))""", re.IGNORECASE)
_STATUS_LINE = re.compile(rb"HTTP/\d(?:\.\d)?\s+(\d{3})(?:\s+(.*))?")


class BatchFormatError(ValueError):
    """A batch body that is not the multipart/mixed of application/http parts it should be."""


@dataclass(frozen=True)
class BatchCall:
    """One call of a batch: ``key`` is its ``Content-ID`` (unique in the batch), ``url`` the
    call's full URL (only its path is sent), ``params`` its query."""

    key: str
    url: str
    method: str = "GET"
    params: Sequence[tuple[str, str]] | dict[str, Any] = ()

    def request_line(self) -> str:
        parts = urlsplit(self.url)
        query = "&".join(q for q in (parts.query, urlencode(self.params, doseq=True)) if q)
        return f"{self.method} {parts.path}{'?' + query if query else ''} HTTP/1.1"


@dataclass
class PartAnswer:
    """One part of a batch's answer: a whole HTTP response."""

    status: int
    reason: str = ""
    headers: CaseInsensitiveDict = field(default_factory=CaseInsensitiveDict)
    body: bytes = b""

    def response(self, url: str = "") -> requests.Response:
        """The part as a ``requests.Response``, so the checks made for single calls read it."""
        response = requests.Response()
        response.status_code = self.status
        response.reason = self.reason
        response.headers = CaseInsensitiveDict(self.headers)
        response._content = self.body
        response.url = url
        response.encoding = "utf-8"
        return response


# --- Codec --------------------------------------------------------------------------------------


def boundary_of(content_type: str) -> str | None:
    """The boundary of a ``multipart/mixed`` Content-Type, or None for anything else."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    match = _BOUNDARY.search(content_type)
    if media_type != "multipart/mixed" or match is None:
        return None
    return match.group(1) or match.group(2)


def new_boundary() -> str:
    return f"batch_{secrets.token_hex(16)}"


def multipart_compose(
    parts: Sequence[tuple[Sequence[tuple[str, str]], bytes]], boundary: str
) -> bytes:
    """A multipart body (CRLF line ends) from (part headers, part content) pairs."""
    out = bytearray()
    for headers, content in parts:
        out += f"--{boundary}\r\n".encode()
        for name, value in headers:
            out += f"{name}: {value}\r\n".encode()
        out += b"\r\n" + content + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out)


def multipart_parts(body: bytes, boundary: str) -> list[bytes]:
    """The parts of a multipart body, each as its headers and content (RFC 2046: a delimiter
    starts a line; the line end before it belongs to it). LF line ends are read as CRLF
    (google-api-python-client writes LF). Raises ``BatchFormatError`` without a closing
    delimiter."""
    delimiter = b"\n--" + boundary.encode()
    segments = (b"\n" + body).split(delimiter)
    parts: list[bytes] = []
    for segment in segments[1:]:
        if segment.startswith(b"--"):
            return parts
        # The rest of the delimiter line (transport padding), then the part.
        _, newline, part = segment.partition(b"\n")
        if not newline:
            break
        parts.append(part[:-1] if part.endswith(b"\r") else part)
    raise BatchFormatError("the multipart body has no closing delimiter")


def http_message_split(data: bytes) -> tuple[bytes, CaseInsensitiveDict, bytes]:
    """(start line, headers, body) of an HTTP message or a MIME part's headers (an empty start
    line is not read: pass ``data`` from the headers on). Without a blank line, all is head."""
    crlf, lf = data.find(b"\r\n\r\n"), data.find(b"\n\n")
    if crlf >= 0 and (lf < 0 or crlf < lf):
        head, body = data[:crlf], data[crlf + 4 :]
    elif lf >= 0:
        head, body = data[:lf], data[lf + 2 :]
    else:
        head, body = data, b""
    lines = head.replace(b"\r\n", b"\n").split(b"\n")
    headers: CaseInsensitiveDict = CaseInsensitiveDict()
    start = b""
    for index, line in enumerate(lines):
        name, colon, value = line.partition(b":")
        if index == 0 and (not colon or b" " in name.strip()):
            start = line.strip()
            continue
        if colon and name.strip():
            headers[name.strip().decode("latin-1")] = value.strip().decode("latin-1")
    return start, headers, body


def part_split(part: bytes) -> tuple[CaseInsensitiveDict, bytes]:
    """A MIME part's own headers and its content."""
    for blank in (b"\r\n", b"\n"):
        if part.startswith(blank):  # a part without headers of its own
            return CaseInsensitiveDict(), part[len(blank) :]
    _, headers, content = http_message_split(part)
    return headers, content


def content_id_key(value: str | None) -> str | None:
    """The key in a ``Content-ID`` (``<item1>``, or its answer ``<response-item1>``)."""
    if not value:
        return None
    value = value.strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1]
    return value.removeprefix("response-")


def batch_encode(calls: Sequence[BatchCall], boundary: str | None = None) -> tuple[str, bytes]:
    """(Content-Type, body) of a batch request of these calls."""
    boundary = boundary or new_boundary()
    parts = [
        (
            (("Content-Type", "application/http"), ("Content-ID", f"<{call.key}>")),
            f"{call.request_line()}\r\n\r\n".encode(),
        )
        for call in calls
    ]
    return f"multipart/mixed; boundary={boundary}", multipart_compose(parts, boundary)


def batch_decode(content_type: str, body: bytes) -> dict[str, PartAnswer]:
    """The parts of a batch's answer by the key of their ``Content-ID``. Raises
    ``BatchFormatError`` for an answer that is not a batch answer."""
    boundary = boundary_of(content_type)
    if boundary is None:
        raise BatchFormatError("the answer is not multipart/mixed")
    answers: dict[str, PartAnswer] = {}
    for part in multipart_parts(body, boundary):
        headers, content = part_split(part)
        key = content_id_key(headers.get("Content-ID"))
        status_line, inner_headers, inner_body = http_message_split(content)
        match = _STATUS_LINE.fullmatch(status_line)
        if key is None or match is None:
            continue  # an answer to no call of ours, or not a response: its call is retried
        reason = (match.group(2) or b"").decode("latin-1").strip()
        answers[key] = PartAnswer(int(match.group(1)), reason, inner_headers, inner_body)
    return answers


# --- Calling --------------------------------------------------------------------------------------


def batch_call(
    http: ProviderHttp,
    batch_url: str,
    calls: Sequence[BatchCall],
    *,
    operation: str,
) -> dict[str, Any | None]:
    """The JSON body of every call by its key, ``None`` for a call answered 404 (gone).

    One request for all the calls (at most ``MAX_BATCH_CALLS``), then one for the parts that
    failed with a rate limit, a 5xx or a 401, until each is answered (see the module docstring):
    a rate-limited part waits what the answer asks (``Retry-After``, else
    ``DEFAULT_RATE_LIMIT_WAIT_S``), in place when the session's policy allows, else the sync is
    ``Deferred``; a 5xx waits the policy's backoff and is tried ``policy.max_attempts`` times; a
    401 refreshes the token once (a second one is ``ReauthRequired``). Any other refusal raises
    what the session's check raises for it. The outer request has the session's own retries.
    """
    if len(calls) > MAX_BATCH_CALLS:
        raise ValueError(f"a batch holds at most {MAX_BATCH_CALLS} calls")
    if len({call.key for call in calls}) != len(calls):
        raise ValueError("batch calls need distinct keys")
    results: dict[str, Any | None] = {}
    pending = list(calls)
    refreshed = False
    failed_rounds = 0
    while pending:
        content_type, body = batch_encode(pending)
        response = http.request(
            "POST",
            batch_url,
            operation=operation,
            count=len(pending),
            data=body,
            headers={"Content-Type": content_type},
        )
        try:
            answers = batch_decode(response.headers.get("Content-Type", ""), response.content)
        except BatchFormatError:
            answers = {}  # a proxy's page or a cut answer: every part is tried again
        expired, limited, transient = [], [], []
        wait_s = 0.0
        for call in pending:
            answer = answers.get(call.key)
            if answer is None:
                transient.append(call)
                continue
            part = answer.response(call.url)
            if http.budget is not None and answer.status >= 400:
                http.budget.observe(part)
            try:
                http.check(part)
                results[call.key] = part.json()
            except ValueError:
                transient.append(call)  # a body that is not JSON, as for single calls
            except NotFound:
                results[call.key] = None
            except AccessExpired:
                expired.append(call)
            except RateLimited as err:
                http.counter.rate_limited += 1
                limited.append(call)
                wait = err.retry_after_s
                wait_s = max(wait_s, DEFAULT_RATE_LIMIT_WAIT_S if wait is None else wait)
            except TransientError:
                transient.append(call)
        if expired:
            if refreshed or http.refresh is None:
                raise ReauthRequired(f"{http.provider_name} refused a freshly refreshed token")
            http.refresh()
            refreshed = True
        if limited or transient:
            failed_rounds += 1
            policy = http.policy
            if limited and (
                wait_s > policy.max_inplace_wait_s or failed_rounds >= policy.max_attempts
            ):
                raise Deferred(
                    f"{http.provider_name} rate limit",
                    until=timezone.now() + timedelta(seconds=wait_s),
                )
            if transient and failed_rounds >= policy.max_attempts:
                raise TransientError(f"{http.provider_name} batch calls kept failing")
            policy.sleep(max(wait_s, policy.backoff_s(failed_rounds) if transient else 0.0))
        retry = {call.key for call in (*expired, *limited, *transient)}
        pending = [call for call in pending if call.key in retry]
    return results
