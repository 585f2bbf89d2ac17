"""Google's batch endpoint, imitated once for every Google API imitation that has one.

As each Google API's batch guide describes it (one format for all of them, e.g.
https://developers.google.com/workspace/drive/api/guides/performance): a ``POST`` of
``multipart/mixed`` whose parts are ``application/http`` requests with the path only; at most 100
of them; all to one API. Each part is dispatched to the view its path resolves to in the sandbox's
URLconf (the imitation's own view, with whatever wraps it there, so a quota charges each part as
Google charges n calls), as its own request: the outer request's headers apply unless the part sets
them (``Authorization``), the outer ``Content-*`` headers never do. The answer is 200 and
``multipart/mixed``: one whole HTTP response per part, with its own status and error body, its
``Content-ID`` the request's prefixed with ``response-``; Google "might perform your calls in any
order", so the parts are answered in reverse order and a client that pairs them by position fails
here.

A part's path is either the API's own (``/<api>/<version>/...`` under the host, as the guide
writes it) or the full path of the sandbox's URL (what google-api-python-client sends, as it
keeps the path of each call's URL); both reach the same view.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from http import HTTPStatus
from urllib.parse import urlsplit

from django.core.handlers.wsgi import WSGIRequest
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import Resolver404, resolve
from django.views.decorators.csrf import csrf_exempt

from sources.providers.google_batch import (
    MAX_BATCH_CALLS,
    BatchFormatError,
    boundary_of,
    http_message_split,
    multipart_compose,
    multipart_parts,
    new_boundary,
    part_split,
)
from sources.sandbox.google import api_error, backend_error

logger = logging.getLogger(__name__)

# Outer headers a part never inherits (the guide: "Content-Type", "Content-Length" and the other
# Content-* headers describe the outer body only).
_NOT_INHERITED_PREFIXES = ("HTTP_CONTENT_", "CONTENT_")


def _bad_request(message: str) -> HttpResponse:
    return api_error(400, message, "INVALID_ARGUMENT", reason="badRequest")


def _not_found(path: str) -> HttpResponse:
    return api_error(404, f"Not Found: {path}", "NOT_FOUND", reason="notFound")


def batch_endpoint(*, api: str, service: str) -> Callable[[HttpRequest], HttpResponse]:
    """The batch view of one API: ``api`` is its path under the host (``<name>/<version>``),
    ``service`` its host name (for error bodies). Mount it at ``batch/<api>`` and at the
    discovery document's ``batchPath`` under the same sandbox root as the API."""
    api = api.strip("/")

    @csrf_exempt
    def batch(request: HttpRequest) -> HttpResponse:
        if request.method != "POST":
            response = api_error(405, "Method Not Allowed", "UNIMPLEMENTED", reason="notFound")
            response["Allow"] = "POST"
            return response
        boundary = boundary_of(request.headers.get("Content-Type", ""))
        if boundary is None:
            return _bad_request("Batch requests must be of type multipart/mixed with a boundary")
        try:
            parts = multipart_parts(request.body, boundary)
        except BatchFormatError:
            return _bad_request("Failed to parse batch request: no closing boundary")
        if not parts:
            return _bad_request("Failed to parse batch request: no parts")
        if len(parts) > MAX_BATCH_CALLS:
            # The guide's limit; Google's exact wording of this refusal is not documented.
            return _bad_request(
                f"Too many requests in batch: {len(parts)}; at most {MAX_BATCH_CALLS} allowed"
            )
        # The host's root in the sandbox: what precedes "batch" in this endpoint's path.
        root = request.path[: request.path.rindex("/batch") + 1]
        answered = []
        for part in parts:
            headers, content = part_split(part)
            if headers.get("Content-Type", "").split(";")[0].strip().lower() != "application/http":
                return _bad_request("Each part of a batch must be of type application/http")
            answer = _dispatch(request, content, root=root, api=api, service=service)
            content_id = headers.get("Content-ID", "").strip()
            answered.append((content_id, answer))
        out_boundary = new_boundary()
        body = multipart_compose(
            [_part_of(content_id, answer) for content_id, answer in reversed(answered)],
            out_boundary,
        )
        return HttpResponse(body, content_type=f"multipart/mixed; boundary={out_boundary}")

    return batch


def _dispatch(
    outer: HttpRequest, content: bytes, *, root: str, api: str, service: str
) -> HttpResponse:
    """Answer one part: its request, resolved to a view of the same API, called on its own."""
    start, headers, body = http_message_split(content)
    words = start.decode("latin-1").split()
    if len(words) not in (2, 3) or not words[1].startswith("/"):
        return _bad_request("Each part must hold an HTTP request line with a path")
    method, target = words[0].upper(), urlsplit(words[1])
    path = target.path if target.path.startswith(root) else root + target.path.lstrip("/")
    if not path.startswith(f"{root}{api}/"):
        # "All of the inner requests must go to the same Google API."
        return _not_found(target.path)
    try:
        match = resolve(path)
    except Resolver404:
        return _not_found(target.path)
    inner = WSGIRequest(_environ(outer, method, path, target.query, headers, body))
    inner.resolver_match = match
    try:
        return match.func(inner, *match.args, **match.kwargs)
    except Http404:
        return _not_found(target.path)
    except Exception:  # one part failing is that part's 500, as Google answers it
        logger.exception("sandbox batch part failed")
        return backend_error(service)


def _environ(
    outer: HttpRequest, method: str, path: str, query: str, headers: dict, body: bytes
) -> dict:
    environ = {
        key: value
        for key, value in outer.META.items()
        if not key.startswith(_NOT_INHERITED_PREFIXES) and key not in ("wsgi.input",)
    }
    for name, value in headers.items():
        key = name.upper().replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            environ[key] = value
        elif key != "HOST":
            environ[f"HTTP_{key}"] = value  # a part's own header wins over the outer one
    environ.update(
        {
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "SCRIPT_NAME": "",
            "QUERY_STRING": query,
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body),
        }
    )
    return environ


def _part_of(content_id: str, answer: HttpResponse) -> tuple[list[tuple[str, str]], bytes]:
    """One part of the answer: its headers, then the whole HTTP response."""
    headers = [("Content-Type", "application/http")]
    if content_id:
        key = content_id.removeprefix("<").removesuffix(">")
        headers.append(("Content-ID", f"<response-{key}>"))
    content = answer.content if not answer.streaming else b"".join(answer.streaming_content)
    reason = answer.reason_phrase or HTTPStatus(answer.status_code).phrase
    lines = [f"HTTP/1.1 {answer.status_code} {reason}"]
    lines += [f"{name}: {value}" for name, value in answer.items() if name != "Content-Length"]
    lines.append(f"Content-Length: {len(content)}")
    return headers, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + content
