"""The sandbox sends each provider's webhooks, signed the real way, to a local recording server."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sources.sandbox import webhooks
from sources.sandbox.faults import fault_set
from sources.sandbox.gmail import Mailbox
from sources.sandbox.plaid import webhook_signing_key
from sources.sandbox.webhooks import (
    SANDBOX_PUSH_SERVICE_ACCOUNT,
    gmail_push_body,
    gmail_push_endpoint_set,
    gmail_push_send,
    health_notification_body,
    health_signature,
    health_verification_probe,
    health_webhook_send,
    plaid_signing_key_rotate,
    plaid_verification_header,
    plaid_webhook_body,
    plaid_webhook_send,
    pubsub_oidc_token,
)

from .conftest import EMAIL, PLAID_CLIENT, bearer, plaid_link, plaid_post

pytestmark = pytest.mark.django_db

FAST = (0.01, 0.01, 0.01)
AUDIENCE = "https://sibling.example/webhooks/gmail/"


# --- A receiver that records what it is sent ------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


@dataclass
class Recorder:
    """Records each POST; answers the queued statuses in order, then `respond` (default 204)."""

    base: str = ""
    requests: list[Received] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    respond: Callable[[Received], int] | None = None

    @property
    def url(self) -> str:
        return f"{self.base}/hook/"

    def answer(self, received: Received) -> int:
        self.requests.append(received)
        if self.statuses:
            return self.statuses.pop(0)
        return self.respond(received) if self.respond else 204


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    state = Recorder()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            status = state.answer(Received(self.path, dict(self.headers.items()), body))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()
    server.server_close()


def header(received: Received, name: str) -> str:
    lowered = {k.lower(): v for k, v in received.headers.items()}
    return lowered[name.lower()]


# --- Plaid ----------------------------------------------------------------------------------------


def plaid_verify(client, token: str, body: bytes) -> dict:
    """Verify as a receiver does: fetch the key by kid, check the signature, age and body hash."""
    unverified = jwt.get_unverified_header(token)
    assert unverified["alg"] == "ES256" and unverified["typ"] == "JWT"
    answer = plaid_post(client, "webhook_verification_key/get", {"key_id": unverified["kid"]})
    assert answer.status_code == 200, answer.content
    jwk = answer.json()["key"]
    claims = jwt.decode(token, jwt.PyJWK(jwk), algorithms=["ES256"])
    assert claims["request_body_sha256"] == hashlib.sha256(body).hexdigest()
    return {"claims": claims, "key": jwk}


def test_plaid_webhook_is_signed_over_the_exact_body(client, plaid_item, recorder):
    statuses = plaid_webhook_send(
        plaid_item["item_id"], "TRANSACTIONS", "SYNC_UPDATES_AVAILABLE", url=recorder.url
    )
    assert statuses == [204]
    [received] = recorder.requests
    assert header(received, "Content-Type") == "application/json"
    token = header(received, "Plaid-Verification")
    verified = plaid_verify(client, token, received.body)
    assert abs(verified["claims"]["iat"] - time.time()) < 10
    assert verified["key"]["expired_at"] is None
    assert received.json() == {
        "webhook_type": "TRANSACTIONS",
        "webhook_code": "SYNC_UPDATES_AVAILABLE",
        "item_id": plaid_item["item_id"],
        "initial_update_complete": True,
        "historical_update_complete": True,
        "environment": "sandbox",
    }
    # Re-serialising the JSON changes the bytes, so the hash only matches the raw body.
    compact = json.dumps(received.json(), separators=(",", ":")).encode()
    assert hashlib.sha256(compact).hexdigest() != verified["claims"]["request_body_sha256"]


def test_plaid_webhook_bodies_have_the_documented_shapes():
    error = plaid_webhook_body("item-1", "ITEM", "ERROR")
    assert error["error"]["error_code"] == "ITEM_LOGIN_REQUIRED"
    assert error["error"]["error_type"] == "ITEM_ERROR"
    assert error["error"]["status"] == 400 and error["environment"] == "sandbox"
    assert {"error_message", "display_message", "request_id"} <= set(error["error"])
    expiring = plaid_webhook_body("item-1", "ITEM", "PENDING_EXPIRATION")
    assert expiring["consent_expiration_time"].endswith("Z")
    disconnect = plaid_webhook_body("item-1", "ITEM", "PENDING_DISCONNECT")
    assert disconnect["reason"] and disconnect["disconnect_time"].endswith("Z")
    revoked = plaid_webhook_body("item-1", "ITEM", "USER_PERMISSION_REVOKED")
    assert revoked["error"]["error_code"] == "USER_PERMISSION_REVOKED"
    custom = plaid_webhook_body(
        "item-1", "TRANSACTIONS", "SYNC_UPDATES_AVAILABLE", historical_update_complete=False
    )
    assert custom["initial_update_complete"] and not custom["historical_update_complete"]
    coded = plaid_webhook_body("item-1", "ITEM", "ERROR", error="ACCESS_NOT_GRANTED")
    assert coded["error"]["error_code"] == "ACCESS_NOT_GRANTED"


def test_plaid_retries_until_a_2xx_and_redelivers_identical_bytes(client, plaid_item, recorder):
    recorder.statuses = [500, 503]
    statuses = plaid_webhook_send(
        plaid_item["item_id"],
        "ITEM",
        "ERROR",
        url=recorder.url,
        retry_delays=FAST,
    )
    assert statuses == [500, 503, 204]
    assert len({r.body for r in recorder.requests}) == 1

    recorder.requests.clear()
    recorder.statuses = [500] * 4
    assert (
        plaid_webhook_send(
            plaid_item["item_id"], "ITEM", "ERROR", url=recorder.url, retry_delays=FAST
        )
        == [500] * 4
    )  # the first try and three retries, then Plaid gives up

    recorder.requests.clear()
    statuses = plaid_webhook_send(
        plaid_item["item_id"], "TRANSACTIONS", "SYNC_UPDATES_AVAILABLE", url=recorder.url,
        duplicate=True,
    )  # fmt: skip
    assert statuses == [204, 204]
    first, second = recorder.requests
    assert first.body == second.body
    assert header(first, "Plaid-Verification") == header(second, "Plaid-Verification")


def test_plaid_webhook_goes_to_the_linked_url_or_fails_without_one(client, recorder):
    linked = plaid_link(client, webhook=recorder.url)
    assert plaid_webhook_send(linked["item_id"], "ITEM", "USER_PERMISSION_REVOKED") == [204]
    assert recorder.requests[0].path == "/hook/"
    unlinked = plaid_link(client)
    with pytest.raises(webhooks.WebhookInputError):
        plaid_webhook_send(unlinked["item_id"], "ITEM", "ERROR")


def test_plaid_forged_variants_and_an_expired_key(client):
    body = b'{"webhook_type": "ITEM"}'
    old = plaid_verification_header(body, iat=int(time.time()) - 600)
    assert plaid_verify(client, old, body)["claims"]["iat"] < time.time() - 300
    unknown = plaid_verification_header(body, kid="no-such-kid")
    answer = plaid_post(client, "webhook_verification_key/get", {"key_id": "no-such-kid"})
    assert jwt.get_unverified_header(unknown)["kid"] == "no-such-kid"
    assert answer.status_code == 400
    stranger = plaid_verification_header(body, key=ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(jwt.InvalidSignatureError):
        plaid_verify(client, stranger, body)
    hs = plaid_verification_header(body, alg="HS256")
    assert jwt.get_unverified_header(hs)["alg"] == "HS256"
    with pytest.raises(AssertionError):
        plaid_verify(client, hs, body)  # a receiver refuses any alg but ES256

    old_kid, old_key = webhook_signing_key()
    new_kid = plaid_signing_key_rotate()
    assert new_kid != old_kid and webhook_signing_key()[0] == new_kid
    signed_with_old = plaid_verification_header(body, kid=old_kid, key=old_key)
    expired = plaid_verify(client, signed_with_old, body)["key"]
    assert isinstance(expired["expired_at"], int) and expired["kid"] == old_kid
    current = plaid_verify(client, plaid_verification_header(body), body)["key"]
    assert current["kid"] == new_kid and current["expired_at"] is None


def test_new_activity_sends_sync_updates_available(sandbox, client, settings, recorder):
    receiver = f"{recorder.base}/webhooks/plaid/"
    linked = plaid_link(client, webhook=receiver)
    fault_set("plaid", linked["item_id"], "new_activity")
    [received] = recorder.requests
    assert received.path == "/webhooks/plaid/"
    assert received.json()["webhook_code"] == "SYNC_UPDATES_AVAILABLE"
    assert received.json()["item_id"] == linked["item_id"]

    # Over HTTP too, verifying with the key fetched from the running sandbox.
    answer = requests.post(
        f"{sandbox.url}/sandbox/_faults",
        json={"provider": "plaid", "account": linked["item_id"], "fault": "new_activity"},
        timeout=10,
    )
    assert answer.status_code == 200
    second = recorder.requests[1]
    token = header(second, "Plaid-Verification")
    key = requests.post(
        f"{settings.SIBLING_SANDBOX_BASE_URL}/plaid/webhook_verification_key/get",
        json={**PLAID_CLIENT, "key_id": jwt.get_unverified_header(token)["kid"]},
        timeout=10,
    ).json()["key"]
    claims = jwt.decode(token, jwt.PyJWK(key), algorithms=["ES256"])
    assert claims["request_body_sha256"] == hashlib.sha256(second.body).hexdigest()

    settings.SIBLING_SANDBOX_SEND_WEBHOOKS = False
    fault_set("plaid", linked["item_id"], "new_activity")
    assert len(recorder.requests) == 2


def test_new_activity_survives_a_receiver_that_is_down(client, monkeypatch):
    monkeypatch.setattr(webhooks, "RETRY_DELAYS", FAST)
    linked = plaid_link(client, webhook="http://127.0.0.1:9/webhooks/plaid/")
    fault_set("plaid", linked["item_id"], "new_activity")  # does not raise
    assert webhooks.activity_webhooks_send("plaid", linked["item_id"]) == [0, 0, 0, 0]


# --- Gmail ----------------------------------------------------------------------------------------


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


# --- Google Health ----------------------------------------------------------------------------

SECRET = "Bearer health-secret"


def served_health_key(client) -> ec.EllipticCurvePublicKey:
    pem = client.get("/sandbox/google/health/webhook-public-key.pem")
    assert pem.status_code == 200
    key = serialization.load_pem_public_key(pem.content)
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


def test_health_verification_probe_pair(recorder):
    recorder.respond = lambda r: 201 if r.headers.get("Authorization") == SECRET else 401
    assert health_verification_probe(recorder.url, SECRET) == (201, 401)
    first, second = recorder.requests
    assert first.json() == second.json() == {"type": "verification"}
    assert header(first, "User-Agent") == "Google-Health-API-Webhooks-Verifier"
    assert header(first, "Authorization") == SECRET
    assert "authorization" not in {k.lower() for k in second.headers}


def test_health_notification_is_signed_under_either_header(client, recorder):
    body = health_notification_body("1234", "steps", [("2026-03-01", "2026-03-02")])
    assert health_webhook_send(recorder.url, SECRET, body) == [204]
    assert health_webhook_send(
        recorder.url, SECRET, [body], signature_header="GOOGLE-HEALTH-API-SIGNATURE"
    ) == [204]
    key = served_health_key(client)
    for received, name in zip(
        recorder.requests, ("X-HEALTHAPI-SIGNATURE", "GOOGLE-HEALTH-API-SIGNATURE"), strict=True
    ):
        assert header(received, "Authorization") == SECRET
        signature = base64.b64decode(header(received, name))
        key.verify(signature, received.body, ec.ECDSA(hashes.SHA256()))
        with pytest.raises(InvalidSignature):
            key.verify(signature, received.body + b" ", ec.ECDSA(hashes.SHA256()))
    assert recorder.requests[1].json() == [body]

    health_webhook_send(recorder.url, None, body, signature_header=None)
    unsigned = {k.lower() for k in recorder.requests[2].headers}
    assert not unsigned & {"authorization", "x-healthapi-signature"}
    assert health_signature(b"abc") != health_signature(b"abc")  # ECDSA is randomised


def test_health_notification_shape_and_retries(recorder):
    body = health_notification_body(
        "1234", "sleep", [("2026-03-01", "2026-03-02")], operation="DELETE", utc_offset_s=-18000
    )
    data = body["data"]
    assert (data["version"], data["healthUserId"], data["operation"], data["dataType"]) == (
        "1", "1234", "DELETE", "sleep",
    )  # fmt: skip
    assert data["clientProvidedSubscriptionName"] == "sibling-sandbox"
    [interval] = data["intervals"]
    assert interval["physicalTimeInterval"] == {
        "startTime": "2026-03-01T05:00:00Z",
        "endTime": "2026-03-03T05:00:00Z",
    }
    assert interval["civilIso8601TimeInterval"] == {
        "startTime": "2026-03-01T00:00:00",
        "endTime": "2026-03-03T00:00:00",
    }
    civil = interval["civilDateTimeInterval"]
    assert civil["startDateTime"]["date"] == {"year": 2026, "month": 3, "day": 1}
    assert civil["endDateTime"]["date"] == {"year": 2026, "month": 3, "day": 3}
    with pytest.raises(webhooks.WebhookInputError):
        health_notification_body("1234", "steps", [("2026-03-02", "2026-03-01")])

    recorder.statuses = [500, 429]
    statuses = health_webhook_send(recorder.url, SECRET, body, duplicate=True, retry_delays=FAST)
    assert statuses == [500, 429, 204, 204]
    assert len({r.body for r in recorder.requests}) == 1


# --- The control endpoint -------------------------------------------------------------------------


def control(client, payload: object):
    return client.post("/sandbox/_webhooks", payload, content_type="application/json")


def test_control_endpoint_sends_to_the_configured_receivers(client, plaid_item, settings, recorder):
    settings.SIBLING_PUBLIC_URL = recorder.base
    settings.GMAIL_PUSH_AUDIENCE = ""
    settings.FITBIT_WEBHOOK_SECRET = SECRET
    answer = control(client, {"provider": "plaid", "item_id": plaid_item["item_id"]})
    assert answer.status_code == 200, answer.content
    assert answer.json()["statuses"] == [204]
    assert recorder.requests[-1].path == "/webhooks/plaid/"

    answer = control(client, {"provider": "gmail", "email": EMAIL, "as_number": True})
    assert answer.json()["statuses"] == [204]
    assert recorder.requests[-1].path == "/webhooks/gmail/"
    assert isinstance(push_data(recorder.requests[-1])["historyId"], int)

    recorder.respond = lambda r: 201 if r.headers.get("Authorization") == SECRET else 401
    answer = control(client, {"provider": "health", "kind": "verification"})
    assert answer.json()["statuses"] == [201, 401]
    answer = control(
        client,
        {
            "provider": "health",
            "email": EMAIL,
            "data_type": "sleep",
            "intervals": [["2026-03-01", "2026-03-01"]],
            "signature_header": "GOOGLE-HEALTH-API-SIGNATURE",
        },
    )
    assert answer.json()["statuses"] == [201]
    received = recorder.requests[-1]
    assert received.path == "/webhooks/fitbit/"
    assert received.json()["data"]["dataType"] == "sleep"
    signature = base64.b64decode(header(received, "GOOGLE-HEALTH-API-SIGNATURE"))
    served_health_key(client).verify(signature, received.body, ec.ECDSA(hashes.SHA256()))


BAD_CONTROL_INPUT = [
    "not an object",
    {"provider": "rescuetime"},
    {"provider": "plaid"},
    {"provider": "plaid", "item_id": "no-such-item"},
    {"provider": "gmail"},
    {"provider": "gmail", "email": EMAIL, "history_id": True},
    {"provider": "gmail", "email": EMAIL, "duplicate": "yes"},
    {"provider": "health", "kind": "verification", "secret": ""},
    {"provider": "health", "kind": "other"},
    {"provider": "health", "email": EMAIL, "intervals": [["2026-03-01"]]},
    {"provider": "health", "email": EMAIL, "intervals": [["x", "y"]]},
    {"provider": "health", "email": EMAIL, "signature_header": "X-OTHER"},
    {"provider": "health", "email": EMAIL, "operation": "UPDATE"},
]


def test_control_endpoint_refuses_bad_input(client, settings, recorder):
    settings.SIBLING_PUBLIC_URL = recorder.base
    for payload in BAD_CONTROL_INPUT:
        answer = control(client, payload)
        assert answer.status_code == 400, (payload, answer.content)
        assert "error" in answer.json()
    assert recorder.requests == []


def test_control_endpoint_reserved_fields_and_methods(client, plaid_item, settings, recorder):
    settings.SIBLING_PUBLIC_URL = recorder.base
    answer = control(
        client,
        {"provider": "plaid", "item_id": plaid_item["item_id"], "fields": {"url": "x"}},
    )
    assert answer.status_code == 400
    assert client.get("/sandbox/_webhooks").status_code == 405
    assert recorder.requests == []
