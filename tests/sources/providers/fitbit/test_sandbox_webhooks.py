"""The sandbox sends Google Health API notifications, signed, to a local recording server."""

from __future__ import annotations

import base64

import pytest
import tink
from tink import signature

from sources.providers.fitbit.sandbox import (
    health_notification_body,
    health_signature,
    health_signing_key,
    health_verification_probe,
    health_webhook_send,
)
from sources.sandbox import webhooks
from tests.sources.sandbox.oauth import EMAIL
from tests.sources.sandbox.recorder import FAST, header

pytestmark = pytest.mark.django_db

SECRET = "Bearer health-secret"


signature.register()
KEYSET_PATH = "/sandbox/google/health/webhooks/webhooks_public_keyset.json"


def served_keyset(client) -> dict:
    answer = client.get(KEYSET_PATH)
    assert answer.status_code == 200
    return answer.json()


def served_verifier(client) -> signature.PublicKeyVerify:
    """Tink's verifier of the served keyset, read as Tink reads Google's (no secret inside)."""
    text = client.get(KEYSET_PATH).content.decode()
    handle = tink.json_proto_keyset_format.parse_without_secret(text)
    return handle.primitive(signature.PublicKeyVerify)


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
    verifier = served_verifier(client)
    key_id, _key = health_signing_key()
    for received, name in zip(
        recorder.requests, ("X-HEALTHAPI-SIGNATURE", "GOOGLE-HEALTH-API-SIGNATURE"), strict=True
    ):
        assert header(received, "Authorization") == SECRET
        output = base64.b64decode(header(received, name))
        # Tink's output: the TINK prefix byte, the key id, the DER signature.
        assert output[0] == 1 and int.from_bytes(output[1:5], "big") == key_id
        verifier.verify(output, received.body)
        with pytest.raises(tink.TinkError):
            verifier.verify(output, received.body + b" ")
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


def control(client, payload: object):
    return client.post("/sandbox/_webhooks", payload, content_type="application/json")


def test_control_endpoint_sends_to_the_receiver(client, settings, recorder):
    settings.SIBLING_PUBLIC_URL = recorder.base
    settings.FITBIT_WEBHOOK_SECRET = SECRET
    recorder.respond = lambda r: 201 if r.headers.get("Authorization") == SECRET else 401
    answer = control(client, {"provider": "fitbit", "action": "verification"})
    assert answer.json()["statuses"] == [201, 401]
    answer = control(
        client,
        {
            "provider": "fitbit",
            "email": EMAIL,
            "data_type": "sleep",
            "intervals": [["2026-03-01", "2026-03-01"]],
            "signature_header": "GOOGLE-HEALTH-API-SIGNATURE",
        },
    )
    assert answer.json()["statuses"] == [201] and answer.json()["action"] == "notification"
    received = recorder.requests[-1]
    assert received.path == "/webhooks/fitbit/"
    assert received.json()["data"]["dataType"] == "sleep"
    output = base64.b64decode(header(received, "GOOGLE-HEALTH-API-SIGNATURE"))
    served_verifier(client).verify(output, received.body)


def test_control_rotates_the_primary_key_then_disables_the_old_one(client):
    first = served_keyset(client)
    old_id = first["primaryKeyId"]
    assert [(k["keyId"], k["status"], k["outputPrefixType"]) for k in first["key"]] == [
        (old_id, "ENABLED", "TINK")
    ]
    assert first["key"][0]["keyData"]["keyMaterialType"] == "ASYMMETRIC_PUBLIC"
    rotated = control(client, {"provider": "fitbit", "action": "key_rotate"}).json()
    new_id = rotated["primary_key_id"]
    keyset = served_keyset(client)
    assert keyset["primaryKeyId"] == new_id != old_id
    assert {k["keyId"]: k["status"] for k in keyset["key"]} == {
        new_id: "ENABLED",
        old_id: "ENABLED",
    }
    assert health_signing_key()[0] == new_id
    disabled = control(client, {"provider": "fitbit", "action": "keys_disable"}).json()
    assert disabled["disabled_key_ids"] == [old_id]
    keyset = served_keyset(client)
    assert {k["keyId"]: k["status"] for k in keyset["key"]} == {
        new_id: "ENABLED",
        old_id: "DISABLED",
    }
    body = b"{}"
    served_verifier(client).verify(base64.b64decode(health_signature(body)), body)
    # The next rotation disables the key before it in one step.
    third = control(client, {"provider": "fitbit", "action": "key_rotate"}).json()
    statuses = {k["keyId"]: k["status"] for k in served_keyset(client)["key"]}
    assert statuses == {third["primary_key_id"]: "ENABLED", new_id: "ENABLED", old_id: "DISABLED"}


@pytest.mark.parametrize(
    "payload",
    [
        {"provider": "fitbit", "action": "verification", "secret": ""},
        {"provider": "fitbit", "action": "other"},
        {"provider": "fitbit"},
        {"provider": "fitbit", "email": EMAIL, "intervals": [["2026-03-01"]]},
        {"provider": "fitbit", "email": EMAIL, "intervals": [["x", "y"]]},
        {"provider": "fitbit", "email": EMAIL, "signature_header": "X-OTHER"},
        {"provider": "fitbit", "email": EMAIL, "operation": "UPDATE"},
        {"provider": "fitbit", "email": EMAIL, "secret": 5},
    ],
)
def test_control_endpoint_refuses_bad_input(client, settings, recorder, payload):
    settings.SIBLING_PUBLIC_URL = recorder.base
    answer = control(client, payload)
    assert answer.status_code == 400, answer.content
    assert recorder.requests == []
