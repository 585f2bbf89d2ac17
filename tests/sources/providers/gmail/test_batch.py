"""Gmail's batch endpoint in the sandbox, as Google's guide describes it
(https://developers.google.com/workspace/gmail/api/guides/batch), proven with
google-api-python-client's BatchHttpRequest at the discovery document's batchPath and by hand
at the guide's /batch/gmail/v1: path-only parts, the outer Authorization, Content-IDs answered
as response-<id> in any order, each part's own status and Google error body, 100 parts at most.
"""

from __future__ import annotations

import copy
import json
from urllib.parse import parse_qs, urlsplit

import httplib2
import pytest
import requests
from googleapiclient.discovery import build_from_document
from googleapiclient.errors import HttpError

from sources.providers.gmail.client import METADATA_HEADERS
from sources.providers.gmail.provider import Gmail
from sources.providers.google_batch import BatchCall, batch_decode, batch_encode
from tests.sources.providers.contracts import discovery_document, discovery_errors
from tests.sources.providers.kit import sandbox_fault

pytestmark = pytest.mark.django_db(transaction=True)


def host_root() -> str:
    """The sandbox's stand-in for https://gmail.googleapis.com/ (the API is gmail/v1 under it)."""
    return Gmail.url("api").removesuffix("gmail/v1")


def batch_url() -> str:
    return f"{host_root()}batch/gmail/v1"


class OuterBearer(httplib2.Http):
    """Sends the bearer on the outer request only: each part inherits it from there."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token
        self.sent: list[dict] = []

    def request(self, uri, method="GET", body=None, headers=None, **kwargs):
        headers = {**(headers or {}), "authorization": f"Bearer {self.token}"}
        self.sent.append({"uri": uri, "method": method, "body": body})
        return super().request(uri, method, body=body, headers=headers, **kwargs)


def gmail_service(token: str):
    """gmail.v1 as google-api-python-client ships it, its rootUrl pointed at the sandbox."""
    document = copy.deepcopy(discovery_document("gmail", "v1"))
    document["rootUrl"] = host_root()
    http = OuterBearer(token)
    return build_from_document(document, http=http), http


def listed_ids(connection, count: int) -> list[str]:
    answer = requests.get(
        f"{Gmail.url('api')}/users/me/messages",
        params={"maxResults": count},
        headers=auth(connection),
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    return [ref["id"] for ref in answer.json()["messages"]]


def auth(connection) -> dict[str, str]:
    return {"Authorization": f"Bearer {connection.credentials['access_token']}"}


def single_get(connection, message_id: str) -> requests.Response:
    return requests.get(
        f"{Gmail.url('api')}/users/me/messages/{message_id}",
        params={"format": "metadata", "metadataHeaders": list(METADATA_HEADERS)},
        headers=auth(connection),
        timeout=30,
    )


def post_batch(connection, calls, url: str | None = None, **kwargs) -> requests.Response:
    content_type, body = batch_encode(calls)
    return requests.post(
        url or batch_url(),
        data=body,
        headers={"Content-Type": content_type, **auth(connection)},
        timeout=60,
        **kwargs,
    )


def post_raw_batch(connection, body: str, boundary: str = "b") -> requests.Response:
    """A multipart body written out by hand (what a client library would never send)."""
    return requests.post(
        batch_url(),
        data=body.encode(),
        headers={"Content-Type": f"multipart/mixed; boundary={boundary}", **auth(connection)},
        timeout=30,
    )


def get_call(key: str, message_id: str, **params) -> BatchCall:
    return BatchCall(
        key=key,
        url=f"{Gmail.url('api')}/users/me/messages/{message_id}",
        params={"format": "metadata", "metadataHeaders": list(METADATA_HEADERS), **params},
    )


def test_the_client_library_batch_at_the_discovery_batch_path(connection):
    ids = listed_ids(connection, 5)
    service, http = gmail_service(connection.credentials["access_token"])
    answers: dict[str, tuple] = {}

    def keep(request_id, response, exception):
        answers[request_id] = (response, exception)

    batch = service.new_batch_http_request(callback=keep)
    for message_id in [*ids, "0000000000000000"]:
        batch.add(
            service.users()
            .messages()
            .get(
                userId="me",
                id=message_id,
                format="metadata",
                metadataHeaders=list(METADATA_HEADERS),
            ),
            request_id=message_id,
        )
    batch.execute()

    # One round trip, to the document's rootUrl + batchPath ("batch"), the parts path-only.
    (sent,) = http.sent
    assert sent["uri"] == f"{host_root()}batch" and sent["method"] == "POST"
    assert "Authorization" not in sent["body"] and "authorization" not in sent["body"]
    assert set(answers) == {*ids, "0000000000000000"}
    for message_id in ids:
        message, error = answers[message_id]
        assert error is None
        assert message == single_get(connection, message_id).json()
        assert discovery_errors("gmail", "v1", "gmail.users.messages.get", message) == []
    message, error = answers["0000000000000000"]
    assert message is None and isinstance(error, HttpError)
    assert error.resp.status == 404
    assert json.loads(error.content)["error"]["errors"][0]["reason"] == "notFound"


def test_the_guide_endpoint_pairs_by_content_id_in_any_order(connection):
    ids = listed_ids(connection, 3)
    calls = [get_call(f"item{n}", message_id) for n, message_id in enumerate(ids)]
    answer = post_batch(connection, calls)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("multipart/mixed; boundary=")
    # Each answer part names its call as response-<Content-ID>, not in the order asked.
    order = [
        line.split(b"<", 1)[1].rstrip(b">\r")
        for line in answer.content.split(b"\n")
        if line.lower().startswith(b"content-id:")
    ]
    assert order == [b"response-item2", b"response-item1", b"response-item0"]
    parts = batch_decode(answer.headers["Content-Type"], answer.content)
    for n, message_id in enumerate(ids):
        part = parts[f"item{n}"]
        assert part.status == 200
        assert part.headers["Content-Type"].startswith("application/json")
        assert json.loads(part.body) == single_get(connection, message_id).json()


def test_the_guide_form_of_the_path_reaches_the_same_view(connection):
    (message_id,) = listed_ids(connection, 1)
    # Path only, as the guide writes it: /gmail/v1/... under the host.
    body = (
        "--batch_foo\r\nContent-Type: application/http\r\nContent-ID: <item1>\r\n\r\n"
        f"GET /gmail/v1/users/me/messages/{message_id}?format=minimal\r\n\r\n"
        "--batch_foo--\r\n"
    )
    answer = post_raw_batch(connection, body, "batch_foo")
    part = batch_decode(answer.headers["Content-Type"], answer.content)["item1"]
    assert part.status == 200 and json.loads(part.body)["id"] == message_id


def test_each_part_has_its_own_status_while_the_batch_answers_200(connection):
    ids = listed_ids(connection, 4)
    sandbox_fault(connection, "rate_limit")  # the first part dispatched
    sandbox_fault(connection, "server_error")  # the second
    calls = [get_call(f"c{n}", message_id) for n, message_id in enumerate(ids)]
    calls.append(get_call("gone", "0000000000000000"))
    calls.append(get_call("bad", ids[0], format="bogus"))
    answer = post_batch(connection, calls)
    assert answer.status_code == 200
    parts = batch_decode(answer.headers["Content-Type"], answer.content)
    statuses = {key: part.status for key, part in parts.items()}
    assert statuses == {"c0": 429, "c1": 500, "c2": 200, "c3": 200, "gone": 404, "bad": 400}
    rate = json.loads(parts["c0"].body)["error"]
    assert (rate["code"], rate["status"]) == (429, "RESOURCE_EXHAUSTED")
    assert parts["c0"].headers["Retry-After"] == "30"
    assert json.loads(parts["c1"].body)["error"]["errors"][0]["reason"] == "backendError"


def test_a_403_rate_limit_in_a_part(connection):
    ids = listed_ids(connection, 2)
    sandbox_fault(connection, "user_rate_limit_403")
    parts = batch_decode(
        *_content(post_batch(connection, [get_call("a", ids[0]), get_call("b", ids[1])]))
    )
    assert (parts["a"].status, parts["b"].status) == (403, 200)
    error = json.loads(parts["a"].body)["error"]
    assert error["errors"][0]["reason"] == "userRateLimitExceeded"


def _content(answer: requests.Response) -> tuple[str, bytes]:
    assert answer.status_code == 200, answer.text
    return answer.headers["Content-Type"], answer.content


def test_the_outer_authorization_applies_unless_a_part_sets_its_own(connection):
    (message_id,) = listed_ids(connection, 1)
    body = (
        "--b\r\nContent-Type: application/http\r\nContent-ID: <outer>\r\n\r\n"
        f"GET /gmail/v1/users/me/messages/{message_id}\r\n\r\n"
        "--b\r\nContent-Type: application/http\r\nContent-ID: <own>\r\n\r\n"
        f"GET /gmail/v1/users/me/messages/{message_id}\r\n"
        "Authorization: Bearer not-a-token\r\n\r\n"
        "--b--\r\n"
    )
    answer = post_raw_batch(connection, body)
    parts = batch_decode(*_content(answer))
    assert parts["outer"].status == 200
    assert parts["own"].status == 401
    assert json.loads(parts["own"].body)["error"]["errors"][0]["reason"] == "authError"
    # Without any credentials every part is refused, the batch itself still answers 200.
    content_type, payload = batch_encode([get_call("x", message_id)])
    anonymous = requests.post(
        batch_url(), data=payload, headers={"Content-Type": content_type}, timeout=30
    )
    assert batch_decode(*_content(anonymous))["x"].status == 401


def test_more_than_100_calls_are_refused(connection):
    (message_id,) = listed_ids(connection, 1)
    answer = post_batch(connection, [get_call(f"k{n}", message_id) for n in range(101)])
    assert answer.status_code == 400
    assert answer.json()["error"]["status"] == "INVALID_ARGUMENT"
    full = post_batch(connection, [get_call(f"k{n}", message_id) for n in range(100)])
    assert len(batch_decode(*_content(full))) == 100


def test_a_batch_that_is_not_one_is_refused_and_parts_stay_in_their_api(connection):
    plain = requests.post(
        batch_url(), data=b"{}", headers={"Content-Type": "application/json"}, timeout=30
    )
    assert plain.status_code == 400 and plain.json()["error"]["code"] == 400
    assert requests.get(batch_url(), timeout=30).status_code == 405
    # All inner requests go to one API: another Google API's path is not reached from here.
    body = (
        "--b\r\nContent-Type: application/http\r\nContent-ID: <other>\r\n\r\n"
        "GET /calendar/v3/users/me/calendarList\r\n\r\n--b--\r\n"
    )
    answer = post_raw_batch(connection, body)
    assert batch_decode(*_content(answer))["other"].status == 404


def test_the_clients_batch_parts_are_calls_the_discovery_document_describes(
    connection, monkeypatch
):
    from ingestion.http import CallCounter, RetryPolicy
    from sources.providers.gmail.client import GmailSyncClient
    from sources.providers.google_batch import http_message_split, multipart_parts, part_split

    document = discovery_document("gmail", "v1")
    # The guide's endpoint on the document's host; the sandbox mirrors it under its root.
    assert Gmail.urls["batch"] == f"{document['rootUrl']}batch/gmail/v1"
    assert Gmail.sandbox_paths["batch"] == "/google/batch/gmail/v1"
    method = document["resources"]["users"]["resources"]["messages"]["methods"]["get"]
    sent: list[requests.PreparedRequest] = []
    send = requests.Session.send

    def recording_send(session, request, **kwargs):
        sent.append(request)
        return send(session, request, **kwargs)

    monkeypatch.setattr(requests.Session, "send", recording_send)
    ids = listed_ids(connection, 3)
    client = GmailSyncClient(connection, counter=CallCounter(), policy=RetryPolicy())
    try:
        messages = client._messages_get(ids)
    finally:
        client.close()
    assert [m["id"] for m in messages] == ids
    (batch,) = [request for request in sent if "/batch/" in request.url]
    assert batch.url == batch_url() and batch.method == "POST"
    content_type = batch.headers["Content-Type"]
    for raw in multipart_parts(batch.body, content_type.split("boundary=", 1)[1]):
        headers, content = part_split(raw)
        assert headers["Content-Type"] == "application/http"
        start, inner_headers, _ = http_message_split(content)
        verb, target, _version = start.decode().split(" ")
        path, _, query = target.partition("?")
        # The path only (no host), of users.messages.get, with parameters the method declares.
        assert verb == method["httpMethod"]
        assert path.removeprefix(urlsplit(host_root()).path) in {
            f"gmail/v1/users/me/messages/{message_id}" for message_id in ids
        }
        params = parse_qs(query)
        assert set(params) <= set(method["parameters"])
        assert params["format"] == ["metadata"]
        assert params["format"][0] in method["parameters"]["format"]["enum"]
        assert params["metadataHeaders"] == list(METADATA_HEADERS)
        assert "Authorization" not in inner_headers  # the outer request's applies


def test_a_part_cannot_reach_the_sandbox_controls_or_another_mailbox(connection):
    from sources.sandbox.faults import faults_pending

    email = connection.sandbox_account
    control = json.dumps({"provider": "google", "account": email, "fault": "revoke"})
    body = (
        "--b\r\nContent-Type: application/http\r\nContent-ID: <control>\r\n\r\n"
        "POST /sandbox/_faults HTTP/1.1\r\nContent-Type: application/json\r\n\r\n"
        f"{control}\r\n"
        "--b\r\nContent-Type: application/http\r\nContent-ID: <climb>\r\n\r\n"
        "POST /gmail/v1/../../_faults HTTP/1.1\r\nContent-Type: application/json\r\n\r\n"
        f"{control}\r\n"
        "--b\r\nContent-Type: application/http\r\nContent-ID: <other>\r\n\r\n"
        "GET /gmail/v1/users/someone.else@example.com/profile HTTP/1.1\r\n\r\n"
        "--b--\r\n"
    )
    answer = post_raw_batch(connection, body)
    parts = batch_decode(*_content(answer))
    assert (parts["control"].status, parts["climb"].status) == (404, 404)
    assert parts["other"].status == 403  # Gmail's "Delegation denied"
    assert "revoke" not in faults_pending("google", email)
    assert single_get(connection, listed_ids(connection, 1)[0]).status_code == 200
