"""Google Health notifications: the verification handshake, the signature and secret checked,
and a notification fetching exactly the days it names."""

import base64
import json
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from ingestion.models import SyncRun, WebhookEvent
from sibling.mongo import plain_database
from sources.providers.fitbit import sandbox as fitbit_hooks
from tests.ingestion.conftest import fresh

pytestmark = pytest.mark.django_db(transaction=True)
Status = WebhookEvent.Status
HEALTH_URL = "/webhooks/fitbit/"


@pytest.fixture
def hooks(sandbox, settings):
    """Deliveries go to this test's live server, as providers would to Sibling's public URL."""
    settings.SIBLING_PUBLIC_URL = sandbox.url
    settings.SIBLING_SYNC_ON_DUE = True  # a notification's sync runs inline in tests
    return sandbox


def test_health_handshake_answers_201_with_the_secret_and_401_without(hooks, settings):
    with_secret, without = fitbit_hooks.health_verification_probe(
        f"{hooks.url}{HEALTH_URL}", settings.FITBIT_WEBHOOK_SECRET
    )
    assert (with_secret, without) == (201, 401)


def test_health_notification_fetches_exactly_the_named_days(hooks, connection, settings):
    cursors = fresh(connection).cursors
    # A whole day in the past in any time zone (the sandbox account's today is local).
    day = (connection.created_at - timedelta(days=2)).date().isoformat()
    body = fitbit_hooks.health_notification_body(
        connection.external_account_id, "steps", [(day, day)]
    )
    for header in ("X-HEALTHAPI-SIGNATURE", "GOOGLE-HEALTH-API-SIGNATURE"):
        statuses = fitbit_hooks.health_webhook_send(
            f"{hooks.url}{HEALTH_URL}",
            settings.FITBIT_WEBHOOK_SECRET,
            body,
            signature_header=header,
        )
        assert statuses == [204]
    event = WebhookEvent.objects.get(provider="fitbit")
    assert event.deliveries == 2 and event.status == Status.PROCESSED, event.error
    run = SyncRun.objects.get(connection=connection, trigger=SyncRun.Trigger.WEBHOOK)
    assert run.outcome == SyncRun.Outcome.SUCCESS and run.api_calls == 1
    stored = plain_database()["behavioral_data"].find_one(
        {"user": connection.user_id, "kind": "activity_day", "external_id": day}
    )
    assert stored is not None
    assert fresh(connection).cursors == cursors  # a window fetch leaves cursors alone


def test_health_notification_with_a_bad_signature_or_secret_is_401(client, hooks, settings):
    body = json.dumps(
        fitbit_hooks.health_notification_body("123", "steps", [("2026-11-01", "2026-11-01")])
    ).encode()
    other = ec.generate_private_key(ec.SECP256R1())
    key_id, _key = fitbit_hooks.health_signing_key()  # forged under the real key's id
    forged = client.post(
        HEALTH_URL,
        data=body,
        content_type="application/json",
        HTTP_AUTHORIZATION=settings.FITBIT_WEBHOOK_SECRET,
        HTTP_X_HEALTHAPI_SIGNATURE=fitbit_hooks.health_signature(body, key=other, key_id=key_id),
    )
    assert forged.status_code == 401
    wrong_secret = client.post(
        HEALTH_URL,
        data=body,
        content_type="application/json",
        HTTP_AUTHORIZATION="Bearer guessed",
        HTTP_X_HEALTHAPI_SIGNATURE=fitbit_hooks.health_signature(body),
    )
    assert wrong_secret.status_code == 401
    garbage = client.post(
        HEALTH_URL,
        data=body,
        content_type="application/json",
        HTTP_AUTHORIZATION=settings.FITBIT_WEBHOOK_SECRET,
        HTTP_X_HEALTHAPI_SIGNATURE=base64.b64encode(b"not a signature").decode(),
    )
    assert garbage.status_code == 401
