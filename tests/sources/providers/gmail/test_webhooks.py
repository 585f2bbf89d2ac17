"""Gmail's Pub/Sub push: the Google-signed OIDC token checked (audience, sender, age), then a
push triggers one incremental sync, whether its historyId is a number or a string."""

import json
import time

import pytest

from ingestion.models import SyncRun, WebhookEvent
from ingestion.runner import connection_sync
from sources.providers.gmail import sandbox as gmail_hooks
from tests.ingestion.conftest import NO_WAIT, fresh

pytestmark = pytest.mark.django_db(transaction=True)
Status = WebhookEvent.Status
GMAIL_URL = "/webhooks/gmail/"


@pytest.fixture
def hooks(sandbox, settings):
    """Deliveries go to this test's live server, as providers would to Sibling's public URL."""
    settings.SIBLING_PUBLIC_URL = sandbox.url
    settings.SIBLING_SYNC_ON_DUE = True  # a notification's sync runs inline in tests
    # Each test's sandbox has new signing keys; a cached key set would not know them yet.
    from sibling import mongo
    from sources.providers.gmail.webhooks import JWKS_CLIENT

    mongo.process_local_forget(JWKS_CLIENT)
    return sandbox


@pytest.mark.parametrize("as_number", [True, False], ids=["number", "string"])
def test_gmail_push_triggers_an_incremental_sync(hooks, connection, as_number, settings):
    settings.SIBLING_BACKFILL_DAYS = 3
    connection_sync(connection.pk, policy=NO_WAIT)
    history_id = int(fresh(connection).cursors["messages"]["history_id"]) + 5
    statuses = gmail_hooks.gmail_push_send(
        connection.sandbox_account,
        url=f"{hooks.url}{GMAIL_URL}",
        audience=f"{hooks.url}{GMAIL_URL}",
        history_id=history_id,
        duplicate=True,
        as_number=as_number,
    )
    assert statuses == [204, 204] or all(200 <= s < 300 for s in statuses)
    event = WebhookEvent.objects.get(provider="gmail")
    assert event.deliveries == 2 and event.status == Status.PROCESSED
    assert (
        SyncRun.objects.filter(connection=connection, trigger=SyncRun.Trigger.WEBHOOK).count() == 1
    )


def test_gmail_push_with_a_wrong_audience_or_sender_is_401(client, hooks, connection):
    body = json.dumps(gmail_hooks.gmail_push_body(connection.sandbox_account, 1)).encode()
    for token in (
        gmail_hooks.pubsub_oidc_token(audience="https://elsewhere.example/"),
        gmail_hooks.pubsub_oidc_token(
            audience=f"{hooks.url}{GMAIL_URL}", email="intruder@example.com"
        ),
        gmail_hooks.pubsub_oidc_token(
            audience=f"{hooks.url}{GMAIL_URL}", iat=int(time.time()) - 7200, lifetime_s=60
        ),
    ):
        response = client.post(
            GMAIL_URL,
            data=body,
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )
        assert response.status_code == 401
