"""Gmail's sandbox against Gmail's contract: Google's discovery document gmail.v1 (as
google-api-python-client ships it), for every call and parameter set the client makes; and the
recorded fixtures against the same document."""

from __future__ import annotations

import json

import pytest
import requests
from django.conf import settings

from sources.providers.gmail.client import HISTORY_TYPES, METADATA_HEADERS
from sources.providers.gmail.provider import Gmail
from tests.sources.providers.contracts import (
    discovery_document,
    discovery_errors,
    discovery_methods,
    fixture_cases,
    fixtures_unlisted,
    google_error_errors,
    google_fixture_errors,
    schema_errors,
)
from tests.sources.providers.kit import sandbox_fault

API = ("gmail", "v1")

# Each fixture and the method whose answer it records.
FIXTURES = {
    "history_list": "gmail.users.history.list",
    "messages_get_metadata": "gmail.users.messages.get",
    "messages_list": "gmail.users.messages.list",
    "messages_list_last_page": "gmail.users.messages.list",
    "watch_response": "gmail.users.watch",
    "error_401_invalid_credentials": "error",
    "error_403_user_rate_limit": "error",
}
NOT_IN_THE_DOCUMENT = {
    "push_notification": "a Pub/Sub push envelope: not part of the discovery document",
}


def test_every_fixture_is_covered():
    assert fixtures_unlisted("gmail", FIXTURES, NOT_IN_THE_DOCUMENT) == set()


@pytest.mark.parametrize("name", fixture_cases(FIXTURES, NOT_IN_THE_DOCUMENT))
def test_fixture_keeps_the_contract(name):
    assert google_fixture_errors("gmail", API, name, FIXTURES[name]) == []


@pytest.mark.django_db(transaction=True)
def test_every_call_of_the_client_answers_as_the_discovery_document_says(connection):
    # One connection for every call: each answer is checked, and every drift reported at once.
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {connection.credentials['access_token']}"
    api = f"{Gmail.url('api')}/users/me"
    errors: list[str] = []

    def check(method_id: str, answer: requests.Response, status: int = 200) -> dict:
        assert answer.status_code == status, (method_id, answer.status_code, answer.text[:300])
        body = answer.json() if answer.content else None
        errors.extend(
            google_error_errors(body) if status >= 400 else discovery_errors(*API, method_id, body)
        )
        return body

    profile = check("gmail.users.getProfile", session.get(f"{api}/profile", timeout=30))
    first = check(
        "gmail.users.messages.list",
        session.get(f"{api}/messages", params={"q": "after:0", "maxResults": 50}, timeout=30),
    )
    check(
        "gmail.users.messages.list",
        session.get(
            f"{api}/messages",
            params={"q": "after:0", "maxResults": 50, "pageToken": first["nextPageToken"]},
            timeout=30,
        ),
    )
    check(
        "gmail.users.messages.list",
        session.get(f"{api}/messages", params={"q": "after:4102444800"}, timeout=30),
    )
    for ref in first["messages"][:3]:
        check(
            "gmail.users.messages.get",
            session.get(
                f"{api}/messages/{ref['id']}",
                params={"format": "metadata", "metadataHeaders": list(METADATA_HEADERS)},
                timeout=30,
            ),
        )
    check("error", session.get(f"{api}/messages/0000000000000000", timeout=30), status=404)

    sandbox_fault(connection, "new_activity")
    history = check(
        "gmail.users.history.list",
        session.get(
            f"{api}/history",
            params={
                "startHistoryId": profile["historyId"],
                "historyTypes": list(HISTORY_TYPES),
                "maxResults": 500,
            },
            timeout=30,
        ),
    )
    assert history.get("history"), "no history to check"
    check(
        "gmail.users.watch",
        session.post(
            f"{api}/watch",
            json={
                "topicName": settings.GMAIL_PUSH_TOPIC or "projects/sibling/topics/gmail",
                "labelIds": ["INBOX"],
                "labelFilterBehavior": "include",  # the discovery document's value
            },
            timeout=30,
        ),
    )
    check("gmail.users.stop", session.post(f"{api}/stop", timeout=30), status=204)
    # The error bodies of the sandbox's faults keep Google's envelope too.
    for fault, status in (
        ("rate_limit", 429),
        ("user_rate_limit_403", 403),
        ("rate_limit_403", 403),
    ):
        sandbox_fault(connection, fault)
        check("error", session.get(f"{api}/profile", timeout=30), status=status)
    assert errors == []


@pytest.mark.django_db(transaction=True)
def test_the_watch_request_of_the_client_keeps_the_discovery_document(
    connection, monkeypatch, settings
):
    from sources.providers.gmail.webhooks import watch_renew

    settings.GMAIL_PUSH_TOPIC = settings.GMAIL_PUSH_TOPIC or "projects/sibling/topics/gmail"

    sent: list[requests.PreparedRequest] = []
    send = requests.Session.send

    def recording_send(session, request, **kwargs):
        sent.append(request)  # the request still goes to the sandbox as it is
        return send(session, request, **kwargs)

    monkeypatch.setattr(requests.Session, "send", recording_send)
    watch_renew(connection)
    (watch,) = [r for r in sent if r.url.endswith("/users/me/watch")]
    request_schema = discovery_methods(discovery_document(*API))["gmail.users.watch"]["request"]
    assert schema_errors(*API, request_schema["$ref"], json.loads(watch.body)) == []
