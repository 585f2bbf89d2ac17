"""The sandbox sends Google Health API notifications, signed, to a local recording server."""

from __future__ import annotations

import base64

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sources.providers.fitbit.sandbox import (
    health_notification_body,
    health_signature,
    health_verification_probe,
    health_webhook_send,
)
from sources.sandbox import webhooks
from tests.sources.sandbox.oauth import EMAIL
from tests.sources.sandbox.recorder import FAST, header

pytestmark = pytest.mark.django_db

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
    signature = base64.b64decode(header(received, "GOOGLE-HEALTH-API-SIGNATURE"))
    served_health_key(client).verify(signature, received.body, ec.ECDSA(hashes.SHA256()))


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
