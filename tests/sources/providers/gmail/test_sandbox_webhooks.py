"""The sandbox sends Gmail's Pub/Sub pushes, with Google-signed OIDC tokens, to a local server."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
import requests

from sources.providers.gmail.sandbox import (
    SANDBOX_PUSH_SERVICE_ACCOUNT,
    Mailbox,
    gmail_push_body,
    gmail_push_endpoint_set,
    gmail_push_send,
    pubsub_oidc_token,
)
from sources.sandbox.faults import fault_set
from tests.sources.sandbox.oauth import EMAIL, bearer
from tests.sources.sandbox.recorder import FAST, Received, header

from .conftest import GMAIL_READONLY

pytestmark = pytest.mark.django_db

AUDIENCE = "https://sibling.example/webhooks/gmail/"


def oidc_verify(client, token: str, audience: str) -> dict:
    certs = client.get("/sandbox/google/oauth2/v3/certs")
    assert certs.status_code == 200
    jwks = jwt.PyJWKSet.from_dict(certs.json())
    key = jwks[jwt.get_unverified_header(token)["kid"]]
    return jwt.decode(
        token, key, algorithms=["RS256"], audience=audience, issuer="https://accounts.google.com"
    )


def push_data(received: Received) -> dict:
    return json.loads(base64.urlsafe_b64decode(received.json()["message"]["data"]))


def test_gmail_push_carries_a_verifiable_oidc_token(client, recorder):
    statuses = gmail_push_send(
        EMAIL, url=recorder.url, audience=AUDIENCE, history_id=12345, as_number=True
    )
    assert statuses == [204]
    [received] = recorder.requests
    scheme, _, token = header(received, "Authorization").partition(" ")
    assert scheme == "Bearer"
    claims = oidc_verify(client, token, AUDIENCE)
    assert claims["email"] == SANDBOX_PUSH_SERVICE_ACCOUNT and claims["email_verified"] is True
    assert claims["azp"] == claims["sub"] and claims["exp"] > time.time()
    assert push_data(received) == {"emailAddress": EMAIL, "historyId": 12345}
    message = received.json()["message"]
    assert message["messageId"] == message["message_id"]
    assert message["publishTime"] == message["publish_time"]
    assert received.json()["subscription"].startswith("projects/")

    with pytest.raises(jwt.InvalidAudienceError):
        oidc_verify(client, token, "https://someone-else.example/")
    expired = pubsub_oidc_token(audience=AUDIENCE, iat=int(time.time()) - 7200)
    with pytest.raises(jwt.ExpiredSignatureError):
        oidc_verify(client, expired, AUDIENCE)


def test_gmail_history_id_as_string_or_number_and_default(client, recorder):
    gmail_push_send(EMAIL, url=recorder.url, audience=AUDIENCE, history_id=777)
    assert push_data(recorder.requests[0])["historyId"] == "777"
    gmail_push_send(EMAIL, url=recorder.url, audience=AUDIENCE)
    assert push_data(recorder.requests[1])["historyId"] == str(Mailbox.load(EMAIL).history_id)
    body = gmail_push_body(EMAIL, 5, message_id="42")
    assert body["message"]["messageId"] == "42"


def test_gmail_retries_and_duplicates_keep_the_message_id(recorder):
    recorder.statuses = [500]
    statuses = gmail_push_send(
        EMAIL, url=recorder.url, audience=AUDIENCE, duplicate=True, retry_delays=FAST
    )
    assert statuses == [500, 204, 204]
    ids = {r.json()["message"]["messageId"] for r in recorder.requests}
    assert len(ids) == 1 and len({r.body for r in recorder.requests}) == 1


def test_new_activity_pushes_to_a_watched_mailbox(client, gmail_token, settings, recorder):
    auth = bearer(gmail_token["access_token"])
    api = "/sandbox/google/gmail/v1/users/me"
    watch = client.post(
        f"{api}/watch",
        {"topicName": "projects/p/topics/gmail", "labelIds": ["INBOX"]},
        content_type="application/json",
        **auth,
    )
    assert watch.status_code == 200
    settings.SIBLING_PUBLIC_URL = recorder.base
    settings.GMAIL_PUSH_AUDIENCE = ""
    fault_set("google", EMAIL, "new_activity")
    [received] = recorder.requests
    assert received.path == "/webhooks/gmail/"
    token = header(received, "Authorization").split(" ", 1)[1]
    oidc_verify(client, token, f"{recorder.base}/webhooks/gmail/")
    history_id = client.get(f"{api}/profile", **auth).json()["historyId"]
    assert push_data(received) == {"emailAddress": EMAIL, "historyId": history_id}

    assert gmail_push_endpoint_set(EMAIL, recorder.url, audience=AUDIENCE)
    fault_set("google", EMAIL, "new_activity")
    assert recorder.requests[1].path == "/hook/"
    oidc_verify(client, header(recorder.requests[1], "Authorization")[7:], AUDIENCE)

    assert client.post(f"{api}/stop", **auth).status_code == 204
    fault_set("google", EMAIL, "new_activity")
    assert len(recorder.requests) == 2  # no watch, no push


def control(client, payload: object):
    return client.post("/sandbox/_webhooks", payload, content_type="application/json")


def test_control_endpoint_pushes_to_the_receiver(client, settings, recorder):
    settings.SIBLING_PUBLIC_URL = recorder.base
    settings.GMAIL_PUSH_AUDIENCE = ""
    answer = control(client, {"provider": "gmail", "email": EMAIL, "as_number": True})
    assert answer.status_code == 200, answer.content
    assert answer.json()["statuses"] == [204] and answer.json()["action"] == "push"
    assert recorder.requests[-1].path == "/webhooks/gmail/"
    assert isinstance(push_data(recorder.requests[-1])["historyId"], int)


@pytest.mark.parametrize(
    "payload",
    [
        {"provider": "gmail"},
        {"provider": "gmail", "email": EMAIL, "history_id": True},
        {"provider": "gmail", "email": EMAIL, "duplicate": "yes"},
        {"provider": "gmail", "email": EMAIL, "history_id": "not a number", "as_number": True},
    ],
)
def test_control_endpoint_refuses_bad_input(client, settings, recorder, payload):
    settings.SIBLING_PUBLIC_URL = recorder.base
    answer = control(client, payload)
    assert answer.status_code == 400, answer.content
    assert recorder.requests == []


def test_google_oauth_and_the_api_over_http(live_server):
    """Consent, code exchange and an API call over real HTTP, as requests-based clients talk."""
    from urllib.parse import parse_qs, urlsplit

    from sources.providers.gmail.provider import Gmail
    from tests.sources.sandbox.oauth import REDIRECT_URI, google_client

    client_pair = google_client(Gmail)
    base = live_server.url + "/sandbox/google"
    session = requests.Session()
    params = {
        "client_id": client_pair[0],
        "redirect_uri": REDIRECT_URI,
        "response_type": "code",
        "scope": GMAIL_READONLY,
        "state": "abc",
        "access_type": "offline",
    }
    page = session.get(
        f"{base}/o/oauth2/v2/auth", params={**params, "prompt": "consent"}, timeout=10
    )
    assert page.status_code == 200 and "Allow" in page.text
    answer = session.post(
        f"{base}/o/oauth2/v2/auth",
        data={**params, "email": "http.person@example.com", "decision": "allow"},
        allow_redirects=False,
        timeout=10,
    )
    assert answer.status_code == 302
    query = parse_qs(urlsplit(answer.headers["Location"]).query)
    tokens = session.post(
        f"{base}/token",
        data={
            "grant_type": "authorization_code",
            "code": query["code"][0],
            "redirect_uri": REDIRECT_URI,
        },
        auth=client_pair,
        timeout=10,
    ).json()
    profile = session.get(
        f"{base}/gmail/v1/users/me/profile",
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
        timeout=10,
    )
    assert profile.status_code == 200
    assert profile.headers["Content-Type"] == "application/json"
    assert profile.json()["emailAddress"] == "http.person@example.com"
