"""Webhooks: verified against the raw body, stored, answered at once, processed after;
bad input answered with the right status (never a 500); end to end through the sandbox."""

import base64
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from django.utils import timezone

from ingestion.models import SyncRun, WebhookEvent
from ingestion.runner import connection_sync
from ingestion.webhooks import (
    STALE_CLAIM,
    IncomingEvent,
    webhook_event_process,
    webhook_event_store,
    webhook_events_drain,
)
from sibling.mongo import plain_database
from sources.models import UserDataSource
from sources.providers.fitbit import sandbox as fitbit_hooks
from sources.providers.gmail import sandbox as gmail_hooks
from sources.providers.plaid.sandbox import webhooks as plaid_sandbox_hooks
from tests.ingestion.conftest import NO_WAIT, fresh

pytestmark = pytest.mark.django_db(transaction=True)
Status = WebhookEvent.Status
PLAID_URL, GMAIL_URL, HEALTH_URL = "/webhooks/plaid/", "/webhooks/gmail/", "/webhooks/fitbit/"


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


def plaid_post(client, body: dict | bytes, **header_options):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    header = plaid_sandbox_hooks.plaid_verification_header(raw, **header_options)
    return client.post(
        PLAID_URL, data=raw, content_type="application/json", HTTP_PLAID_VERIFICATION=header
    )


# --- Bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("url", [PLAID_URL, GMAIL_URL, HEALTH_URL])
def test_wrong_method_is_405(client, url):
    assert client.get(url).status_code == 405


@pytest.mark.parametrize("url", [PLAID_URL, GMAIL_URL, HEALTH_URL])
def test_missing_signature_or_token_is_401_and_counted_as_rejected(client, url, hooks):
    from ingestion.models import WebhookRejection

    response = client.post(url, data=b'{"x": 1}', content_type="application/json")
    assert response.status_code == 401
    assert not WebhookEvent.objects.exists()  # a refusal is counted, never stored as an event
    rejected = WebhookRejection.objects.get()
    assert rejected.count == 1 and rejected.reason == response.json()["error"]
    assert rejected.sender == "127.0.0.1" and rejected.examples[0]["body_length"] == 8


@pytest.mark.parametrize("url", [PLAID_URL, GMAIL_URL, HEALTH_URL])
def test_body_over_one_megabyte_is_413(client, url):
    response = client.post(
        url, data=b"{" + b" " * 1_000_001 + b"}", content_type="application/json"
    )
    assert response.status_code == 413


def test_plaid_signature_checks(client, hooks, plaid_connection):
    body = plaid_sandbox_hooks.plaid_webhook_body(
        plaid_connection.sandbox_account, "TRANSACTIONS", "SYNC_UPDATES_AVAILABLE"
    )
    raw = json.dumps(body).encode()
    assert plaid_post(client, raw, iat=int(time.time()) - 600).status_code == 401  # stale
    assert plaid_post(client, raw, kid="unknown-key").status_code == 401
    assert plaid_post(client, raw, alg="HS256").status_code == 401
    assert plaid_post(client, raw, key=ec.generate_private_key(ec.SECP256R1())).status_code == 401
    tampered = client.post(
        PLAID_URL,
        data=raw.replace(b"true", b"false"),
        content_type="application/json",
        HTTP_PLAID_VERIFICATION=plaid_sandbox_hooks.plaid_verification_header(raw),
    )
    assert tampered.status_code == 401  # the body hash no longer matches
    assert not WebhookEvent.objects.filter(status=Status.ACCEPTED).exists()


def test_expired_plaid_key_is_refused(client, hooks, plaid_connection):
    from sources.providers.plaid import webhooks as plaid_hooks
    from sources.providers.plaid.sandbox.api import webhook_signing_key

    old_kid = webhook_signing_key()[0]
    plaid_sandbox_hooks.plaid_signing_key_rotate()
    plaid_hooks._keys.clear()
    body = plaid_sandbox_hooks.plaid_webhook_body(plaid_connection.sandbox_account, "ITEM", "ERROR")
    assert plaid_post(client, body, kid=old_kid).status_code == 401


def test_malformed_json_with_a_valid_signature_is_400(client, hooks):
    response = plaid_post(client, b"{not json")
    assert response.status_code == 400 and "malformed" in response.json()["error"]


def test_unknown_event_type_and_unknown_item_are_answered_200(client, hooks, plaid_connection):
    unknown_type = plaid_sandbox_hooks.plaid_webhook_body(
        plaid_connection.sandbox_account, "HOLDINGS", "DEFAULT_UPDATE"
    )
    assert plaid_post(client, unknown_type).status_code == 200
    unknown_item = plaid_sandbox_hooks.plaid_webhook_body(
        "item-nobody-has", "TRANSACTIONS", "SYNC_UPDATES_AVAILABLE"
    )
    response = plaid_post(client, unknown_item)
    assert response.status_code == 200 and response.content == b""  # reveals nothing
    errors = set(WebhookEvent.objects.values_list("error", flat=True))
    assert "no connection for this account" in errors
    assert any(e.startswith("unhandled event type") for e in errors)


# --- Processing ---------------------------------------------------------------------------------


def _stored_event(key: str) -> WebhookEvent:
    incoming = IncomingEvent(
        dedup_key=key,
        event_type="TRANSACTIONS.SYNC_UPDATES_AVAILABLE",
        payload={"item_id": "item-nobody-has"},
    )
    return webhook_event_store(provider="plaid", event=incoming, enqueue=False)[0]


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


# --- Plaid end to end ---------------------------------------------------------------------------


def test_plaid_sync_updates_available_syncs_once_even_when_redelivered(hooks, plaid_connection):
    connection_sync(plaid_connection.pk, policy=NO_WAIT)
    statuses = plaid_sandbox_hooks.plaid_webhook_send(
        plaid_connection.sandbox_account,
        "TRANSACTIONS",
        "SYNC_UPDATES_AVAILABLE",
        url=f"{hooks.url}{PLAID_URL}",
        duplicate=True,
    )
    assert statuses == [200, 200]
    event = WebhookEvent.objects.get(provider="plaid")
    assert event.status == Status.PROCESSED and event.deliveries == 2
    assert event.connection_id == plaid_connection.pk
    runs = SyncRun.objects.filter(connection=plaid_connection, trigger=SyncRun.Trigger.WEBHOOK)
    assert runs.count() == 1
    raw = plain_database()[WebhookEvent._meta.db_table].find_one({"_id": event.pk})
    assert raw["payload"].subtype == 6
    assert plaid_connection.sandbox_account.encode() not in bytes(raw["payload"])

    # Deleting this source's data takes its events too.
    from sources.services import connection_disconnect

    connection_disconnect(connection=fresh(plaid_connection), delete_data=True)
    assert not WebhookEvent.objects.filter(pk=event.pk).exists()


def test_plaid_login_required_and_revocation(client, hooks, plaid_connection):
    error = plaid_sandbox_hooks.plaid_webhook_body(
        plaid_connection.sandbox_account,
        "ITEM",
        "ERROR",
        error=plaid_sandbox_hooks.plaid_webhook_error(),
    )
    assert plaid_post(client, error).status_code == 200
    assert fresh(plaid_connection).status == UserDataSource.Status.REAUTH_REQUIRED

    expiring = plaid_sandbox_hooks.plaid_webhook_body(
        plaid_connection.sandbox_account, "ITEM", "PENDING_DISCONNECT"
    )
    plaid_post(client, expiring)
    assert "Reconnect" in fresh(plaid_connection).notice

    revoked = plaid_sandbox_hooks.plaid_webhook_body(
        plaid_connection.sandbox_account, "ITEM", "USER_PERMISSION_REVOKED"
    )
    plaid_post(client, revoked)
    connection = fresh(plaid_connection)
    assert connection.status == UserDataSource.Status.DISCONNECTED
    assert connection.credentials is None


# --- Gmail (Pub/Sub push) -------------------------------------------------------------------------


@pytest.fixture
def gmail_connection(hooks, person):
    from sources.providers.gmail import Gmail
    from sources.sandbox.testing import google_credentials
    from sources.services import connection_upsert

    email = f"push-{uuid.uuid4().hex[:8]}@example.com"
    credentials = google_credentials(Gmail, email)
    connection = connection_upsert(
        user=person,
        provider=Gmail,
        external_account_id=email,
        credentials=credentials,
        account_label=email,
    )
    connection.sandbox_account = email
    return connection


@pytest.mark.parametrize("as_number", [True, False], ids=["number", "string"])
def test_gmail_push_triggers_an_incremental_sync(hooks, gmail_connection, as_number, settings):
    settings.SIBLING_BACKFILL_DAYS = 3
    connection_sync(gmail_connection.pk, policy=NO_WAIT)
    history_id = int(fresh(gmail_connection).cursors["messages"]["history_id"]) + 5
    statuses = gmail_hooks.gmail_push_send(
        gmail_connection.sandbox_account,
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
        SyncRun.objects.filter(connection=gmail_connection, trigger=SyncRun.Trigger.WEBHOOK).count()
        == 1
    )


def test_gmail_push_with_a_wrong_audience_or_sender_is_401(client, hooks, gmail_connection):
    body = json.dumps(gmail_hooks.gmail_push_body(gmail_connection.sandbox_account, 1)).encode()
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


# --- Google Health API ----------------------------------------------------------------------------


def test_health_handshake_answers_201_with_the_secret_and_401_without(hooks, settings):
    with_secret, without = fitbit_hooks.health_verification_probe(
        f"{hooks.url}{HEALTH_URL}", settings.FITBIT_WEBHOOK_SECRET
    )
    assert (with_secret, without) == (201, 401)


def test_health_notification_fetches_exactly_the_named_days(hooks, fitbit_connection, settings):
    settings.FITBIT_WEBHOOK_PUBLIC_KEY = fitbit_hooks.health_public_key_pem()
    cursors = fresh(fitbit_connection).cursors
    # A whole day in the past in any time zone (the sandbox account's today is local).
    day = (fitbit_connection.created_at - timedelta(days=2)).date().isoformat()
    body = fitbit_hooks.health_notification_body(
        fitbit_connection.external_account_id, "steps", [(day, day)]
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
    run = SyncRun.objects.get(connection=fitbit_connection, trigger=SyncRun.Trigger.WEBHOOK)
    assert run.outcome == SyncRun.Outcome.SUCCESS and run.api_calls == 1
    stored = plain_database()["behavioral_data"].find_one(
        {"user": fitbit_connection.user_id, "kind": "activity_day", "external_id": day}
    )
    assert stored is not None
    assert fresh(fitbit_connection).cursors == cursors  # a window fetch leaves cursors alone


def test_health_notification_with_a_bad_signature_or_secret_is_401(client, hooks, settings):
    settings.FITBIT_WEBHOOK_PUBLIC_KEY = fitbit_hooks.health_public_key_pem()
    body = json.dumps(
        fitbit_hooks.health_notification_body("123", "steps", [("2026-11-01", "2026-11-01")])
    ).encode()
    other = ec.generate_private_key(ec.SECP256R1())
    forged = client.post(
        HEALTH_URL,
        data=body,
        content_type="application/json",
        HTTP_AUTHORIZATION=settings.FITBIT_WEBHOOK_SECRET,
        HTTP_X_HEALTHAPI_SIGNATURE=fitbit_hooks.health_signature(body, key=other),
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


def test_staff_replay_and_payload_need_a_reason_and_are_in_the_ledger(
    client, hooks, plaid_connection
):
    from ingestion.models import AccessLedgerEntry
    from tests.factories import UserFactory

    body = plaid_sandbox_hooks.plaid_webhook_body(
        plaid_connection.sandbox_account, "TRANSACTIONS", "SYNC_UPDATES_AVAILABLE"
    )
    plaid_post(client, body)
    event = WebhookEvent.objects.get(provider="plaid")
    staff = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(staff, backend="django.contrib.auth.backends.ModelBackend")
    changelist = "/admin/ingestion/webhookevent/"
    asked = client.post(changelist, {"action": "replay", "_selected_action": [str(event.pk)]})
    assert "Why replay these events?" in asked.content.decode()
    event.refresh_from_db()
    assert event.attempts == 1  # nothing replayed without a reason
    client.post(
        changelist,
        {"action": "replay", "_selected_action": [str(event.pk)], "reason": "support ticket 42"},
    )
    event.refresh_from_db()
    assert event.attempts == 2 and event.status == Status.PROCESSED

    detail = f"/admin/ingestion/webhookevent/{event.pk}/change/"
    hidden = client.get(detail).content.decode()
    assert plaid_connection.sandbox_account not in hidden and "Show payload" in hidden
    assert (
        plaid_connection.sandbox_account not in client.get(detail, {"reason": "x"}).content.decode()
    )
    reveal = f"/admin/ingestion/webhookevent/{event.pk}/payload/"
    shown = client.post(reveal, {"reason": "checking the item id"}).content.decode()
    assert plaid_connection.sandbox_account in shown
    entries = AccessLedgerEntry.objects.filter(subject=plaid_connection.user).order_by("created_at")
    assert [(e.action, e.reason, e.actor_id) for e in entries] == [
        ("replay", "support ticket 42", staff.pk),
        ("view", "checking the item id", staff.pk),
    ]


def test_an_event_deleted_while_it_is_processed_stays_deleted(monkeypatch):
    """Its person's erasure deletes an event under way: the end of processing writes the
    outcome onto the row if it is still there, and never stores it again."""
    event, _ = webhook_event_store(
        provider="plaid",
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
