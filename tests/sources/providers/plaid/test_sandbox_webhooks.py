"""The sandbox sends Plaid's webhooks, signed the real way, to a local recording server."""

from __future__ import annotations

import hashlib
import json
import time

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec

from sources.providers.plaid import sandbox as plaid_sandbox
from sources.providers.plaid.sandbox.api import webhook_signing_key
from sources.providers.plaid.sandbox.webhooks import (
    plaid_signing_key_rotate,
    plaid_verification_header,
    plaid_webhook_body,
    plaid_webhook_send,
)
from sources.sandbox import webhooks
from sources.sandbox.faults import fault_set
from tests.sources.sandbox.recorder import FAST, header

from .conftest import PLAID_CLIENT, plaid_link, plaid_post

pytestmark = pytest.mark.django_db


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
    # Before the item's first /transactions/sync, Plaid sends only the legacy DEFAULT_UPDATE.
    fault_set("plaid", linked["item_id"], "new_activity")
    [before] = recorder.requests
    assert before.json()["webhook_code"] == "DEFAULT_UPDATE"
    plaid_post(client, "transactions/sync", {"access_token": linked["access_token"]})
    fault_set("plaid", linked["item_id"], "new_activity")
    received = recorder.requests[-1]
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
    assert len(recorder.requests) == 3


def test_new_activity_survives_a_receiver_that_is_down(client, monkeypatch):
    monkeypatch.setattr(webhooks, "RETRY_DELAYS", FAST)
    linked = plaid_link(client, webhook="http://127.0.0.1:9/webhooks/plaid/")
    fault_set("plaid", linked["item_id"], "new_activity")  # does not raise
    assert plaid_sandbox.activity_webhook(linked["item_id"]) == [0, 0, 0, 0]


def control(client, payload: object):
    return client.post("/sandbox/_webhooks", payload, content_type="application/json")


def test_control_endpoint_sends_to_the_receiver(client, plaid_item, settings, recorder):
    settings.SIBLING_PUBLIC_URL = recorder.base
    answer = control(client, {"provider": "plaid", "item_id": plaid_item["item_id"]})
    assert answer.status_code == 200, answer.content
    assert answer.json()["statuses"] == [204] and answer.json()["action"] == "send"
    assert recorder.requests[-1].path == "/webhooks/plaid/"


@pytest.mark.parametrize(
    "payload",
    [
        {"provider": "plaid"},
        {"provider": "plaid", "item_id": "no-such-item"},
        {"provider": "plaid", "action": "other", "item_id": "x"},
        {"provider": "plaid", "item_id": "x", "fields": []},
    ],
)
def test_control_endpoint_refuses_bad_input(client, settings, recorder, payload):
    settings.SIBLING_PUBLIC_URL = recorder.base
    answer = control(client, payload)
    assert answer.status_code == 400, answer.content
    assert recorder.requests == []


def test_control_endpoint_reserved_fields(client, plaid_item, settings, recorder):
    settings.SIBLING_PUBLIC_URL = recorder.base
    answer = control(
        client,
        {"provider": "plaid", "item_id": plaid_item["item_id"], "fields": {"url": "x"}},
    )
    assert answer.status_code == 400
    assert recorder.requests == []
