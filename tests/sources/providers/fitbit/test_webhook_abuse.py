"""Google Health notifications carry no id: identical ones are one delivery within a window and
news again after it; a notification reaches the account's current connection only."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from ingestion.models import WebhookEvent
from ingestion.webhooks import IncomingEvent, webhook_event_store
from sources.models import UserDataSource
from sources.providers.fitbit import sandbox as fitbit_hooks
from tests.factories import UserDataSourceFactory

pytestmark = pytest.mark.django_db(transaction=True)
Status = WebhookEvent.Status
HEALTH_URL = "/webhooks/fitbit/"


def _health_post(client, settings, body: dict):
    raw = json.dumps(body).encode()
    return client.post(
        HEALTH_URL,
        data=raw,
        content_type="application/json",
        HTTP_AUTHORIZATION=settings.FITBIT_WEBHOOK_SECRET,
        HTTP_GOOGLE_HEALTH_API_SIGNATURE=fitbit_hooks.health_signature(raw),
    )


def test_identical_health_notifications_are_one_within_the_window_and_new_after(
    client, sandbox, settings
):
    settings.FITBIT_WEBHOOK_DEDUP_WINDOW_S = 600
    day = timezone.now().date().isoformat()
    body = fitbit_hooks.health_notification_body("health-nobody", "steps", [(day, day)])
    assert _health_post(client, settings, body).status_code == 204
    assert _health_post(client, settings, body).status_code == 204  # a redelivery
    first = WebhookEvent.objects.get(provider="fitbit")
    assert first.deliveries == 2

    # Eleven minutes later the same "steps changed today" is news again.
    WebhookEvent.objects.filter(pk=first.pk).update(
        received_at=timezone.now() - timedelta(minutes=11)
    )
    assert _health_post(client, settings, body).status_code == 204
    events = WebhookEvent.objects.filter(provider="fitbit").order_by("received_at")
    assert events.count() == 2
    assert [e.deliveries for e in events] == [2, 1]
    assert all(e.status == Status.PROCESSED for e in events)
    assert _health_post(client, settings, body).status_code == 204  # and its redelivery
    assert WebhookEvent.objects.filter(provider="fitbit").count() == 2


def test_a_notification_for_a_disconnected_account_reaches_no_connection():
    UserDataSourceFactory(
        provider="fitbit", external_account_id="hu-1", status=UserDataSource.Status.DISCONNECTED
    )
    incoming = IncomingEvent(
        dedup_key="health-to-nobody", event_type="x", payload={"healthUserId": "hu-1"}
    )
    event, _ = webhook_event_store(provider="fitbit", event=incoming)
    event.refresh_from_db()
    assert event.connection_id is None and event.error == "no connection for this account"
