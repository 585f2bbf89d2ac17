"""The bank's notice that it will stop sharing (ITEM PENDING_EXPIRATION, or PENDING_DISCONNECT),
delivered signed to Sibling's webhook, reaches the person as one email; a reconnect through
Plaid's update mode ends the incident."""

import json
import time

import pytest
from django.core import mail

from alerts.models import Incident
from ingestion.models import WebhookEvent
from sources.providers.plaid.sandbox import webhooks as plaid_sandbox_hooks
from sources.services import connection_upsert
from tests.ingestion.conftest import fresh

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def hooks(sandbox, settings):
    settings.SIBLING_PUBLIC_URL = sandbox.url
    return sandbox


def deliver(client, connection, code: str, *, seconds_ago: int) -> None:
    """A new delivery (Plaid tells redeliveries by the signing time and the body: each call
    here is signed at its own second)."""
    raw = json.dumps(
        plaid_sandbox_hooks.plaid_webhook_body(connection.sandbox_account, "ITEM", code)
    ).encode()
    answer = client.post(
        "/webhooks/plaid/",
        data=raw,
        content_type="application/json",
        HTTP_PLAID_VERIFICATION=plaid_sandbox_hooks.plaid_verification_header(
            raw, iat=int(time.time()) - seconds_ago
        ),
    )
    assert answer.status_code == 200


def test_the_banks_expiry_notice_emails_the_person_once(client, hooks, connection, person):
    deliver(client, connection, "PENDING_EXPIRATION", seconds_ago=4)
    # Plaid tells it again, and then that the Item will be disconnected: the same incident.
    deliver(client, connection, "PENDING_EXPIRATION", seconds_ago=3)
    deliver(client, connection, "PENDING_DISCONNECT", seconds_ago=2)
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == [person.email]
    assert message.subject == "Bank (Plaid) will stop sharing your data soon"
    assert f"{hooks.url}/connections/#card-plaid" in message.body
    assert connection.credentials["access_token"] not in message.body

    # The person reconnects (update mode: the same Item); the next notice is a new incident.
    again = fresh(connection)
    connection_upsert(
        user=person,
        provider=again.provider_class,
        external_account_id=again.external_account_id,
        credentials=again.credentials,
    )
    assert Incident.objects.get(connection=connection).closed_by == "reconnected"
    deliver(client, connection, "PENDING_EXPIRATION", seconds_ago=1)
    assert len(mail.outbox) == 2
    assert WebhookEvent.objects.filter(provider="plaid").count() == 4  # none taken as a copy
