"""Webhooks: verified against the raw body, stored, answered at once, processed after;
bad input answered with the right status (never a 500), at every provider's receiver. Each
provider's own verification and events are tested end to end in its folder."""

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.utils import timezone

from ingestion.models import WebhookEvent
from ingestion.webhooks import (
    STALE_CLAIM,
    IncomingEvent,
    webhook_event_process,
    webhook_event_store,
    webhook_events_drain,
)
from tests.sources.providers.kit import provider_with, providers

pytestmark = pytest.mark.django_db(transaction=True)
Status = WebhookEvent.Status
# Every receiver the registry routes.
RECEIVERS = [
    pytest.param(f"/webhooks/{provider.id}/", id=provider.id)
    for provider in providers(webhooks=True)
]


@pytest.fixture
def hooks(sandbox, settings):
    """Deliveries go to this test's live server, as providers would to Sibling's public URL."""
    settings.SIBLING_PUBLIC_URL = sandbox.url
    settings.SIBLING_SYNC_ON_DUE = True  # a notification's sync runs inline in tests
    return sandbox


# --- Bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("url", RECEIVERS)
def test_wrong_method_is_405(client, url):
    # Deliveries are POSTs (a subscription check may be a GET): nothing takes a PUT or DELETE.
    assert client.put(url).status_code == 405
    assert client.delete(url).status_code == 405


@pytest.mark.parametrize("url", RECEIVERS)
def test_a_body_nested_past_the_json_decoders_limit_is_refused_not_a_server_error(url, hooks):
    from django.test import Client

    client = Client(raise_request_exception=False)
    nested = b"[" * 100_000 + b"]" * 100_000
    response = client.post(url, data=nested, content_type="application/json")
    assert 400 <= response.status_code < 500, response.status_code
    assert not WebhookEvent.objects.exists()


@pytest.mark.parametrize("url", RECEIVERS)
def test_missing_signature_or_token_is_401_and_counted_as_rejected(client, url, hooks):
    from ingestion.models import WebhookRejection

    response = client.post(url, data=b'{"x": 1}', content_type="application/json")
    assert response.status_code == 401
    assert not WebhookEvent.objects.exists()  # a refusal is counted, never stored as an event
    rejected = WebhookRejection.objects.get()
    assert rejected.count == 1 and rejected.reason == response.json()["error"]
    assert rejected.sender == "127.0.0.1" and rejected.examples[0]["body_length"] == 8


@pytest.mark.parametrize("url", RECEIVERS)
def test_body_over_one_megabyte_is_413(client, url):
    response = client.post(
        url, data=b"{" + b" " * 1_000_001 + b"}", content_type="application/json"
    )
    assert response.status_code == 413


# --- Processing ---------------------------------------------------------------------------------


def _stored_event(key: str) -> WebhookEvent:
    # An event type no handler knows: processed (and answered) without touching any account.
    incoming = IncomingEvent(dedup_key=key, event_type="UNKNOWN.EVENT", payload={})
    provider = provider_with(webhooks=True).id
    return webhook_event_store(provider=provider, event=incoming, enqueue=False)[0]


def test_each_event_is_processed_once_when_drains_race():
    events = [_stored_event(f"race-{n}") for n in range(20)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: webhook_events_drain(), range(4)))
    for event in events:
        event.refresh_from_db()
        assert event.status == Status.PROCESSED and event.attempts == 1


def test_a_claim_left_by_a_killed_worker_is_taken_again_once_stale():
    abandoned, busy = _stored_event("abandoned"), _stored_event("busy")
    long_ago = timezone.now() - STALE_CLAIM - timedelta(minutes=1)
    WebhookEvent.objects.filter(pk=abandoned.pk).update(
        status=Status.PROCESSING, processed_at=long_ago
    )
    WebhookEvent.objects.filter(pk=busy.pk).update(
        status=Status.PROCESSING, processed_at=timezone.now()
    )

    assert webhook_events_drain() == 1
    abandoned.refresh_from_db()
    busy.refresh_from_db()
    assert abandoned.status == Status.PROCESSED and abandoned.attempts == 1
    assert busy.status == Status.PROCESSING and busy.attempts == 0
    assert webhook_event_process(busy.pk).status == Status.PROCESSING  # not claimed twice


def test_an_event_deleted_while_it_is_processed_stays_deleted(monkeypatch):
    """Its person's erasure deletes an event under way: the end of processing writes the
    outcome onto the row if it is still there, and never stores it again."""
    event, _ = webhook_event_store(
        provider=provider_with(webhooks=True).id,
        event=IncomingEvent(dedup_key=uuid.uuid4().hex, event_type="ITEM.ERROR", payload={}),
        enqueue=False,
    )

    def erased_meanwhile(stored: WebhookEvent) -> None:
        WebhookEvent.objects.filter(pk=stored.pk).delete()
        raise ValueError("the value 'a personal value' is not a date")

    monkeypatch.setattr("ingestion.webhooks.webhook_handler", lambda source: erased_meanwhile)
    processed = webhook_event_process(event.pk)
    assert processed.status == Status.FAILED
    # An unexpected error is named by its class: its text may quote a value.
    assert processed.error == "ValueError"
    assert not WebhookEvent.objects.filter(pk=event.pk).exists()
