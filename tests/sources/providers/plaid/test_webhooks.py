"""Plaid's webhooks: the Plaid-Verification JWT checked against the raw body, then
SYNC_UPDATES_AVAILABLE, ITEM errors and revocations end to end through the sandbox; staff
replay and payload reveal on a Plaid event."""

import json
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from ingestion.models import SyncRun, WebhookEvent
from ingestion.runner import connection_sync
from sibling.mongo import plain_database
from sources.models import UserDataSource
from sources.providers.plaid.sandbox import webhooks as plaid_sandbox_hooks
from tests.ingestion.conftest import NO_WAIT, fresh

pytestmark = pytest.mark.django_db(transaction=True)
Status = WebhookEvent.Status
PLAID_URL = "/webhooks/plaid/"


@pytest.fixture
def hooks(sandbox, settings):
    """Deliveries go to this test's live server, as providers would to Sibling's public URL."""
    settings.SIBLING_PUBLIC_URL = sandbox.url
    settings.SIBLING_SYNC_ON_DUE = True  # a notification's sync runs inline in tests
    return sandbox


def plaid_post(client, body: dict | bytes, **header_options):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    header = plaid_sandbox_hooks.plaid_verification_header(raw, **header_options)
    return client.post(
        PLAID_URL, data=raw, content_type="application/json", HTTP_PLAID_VERIFICATION=header
    )


def test_plaid_signature_checks(client, hooks, connection):
    body = plaid_sandbox_hooks.plaid_webhook_body(
        connection.sandbox_account, "TRANSACTIONS", "SYNC_UPDATES_AVAILABLE"
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


def test_expired_plaid_key_is_refused(client, hooks, connection):
    from sources.providers.plaid import webhooks as plaid_hooks
    from sources.providers.plaid.sandbox.api import webhook_signing_key

    old_kid = webhook_signing_key()[0]
    plaid_sandbox_hooks.plaid_signing_key_rotate()
    plaid_hooks._keys.clear()
    body = plaid_sandbox_hooks.plaid_webhook_body(connection.sandbox_account, "ITEM", "ERROR")
    assert plaid_post(client, body, kid=old_kid).status_code == 401


def test_malformed_json_with_a_valid_signature_is_400(client, hooks):
    response = plaid_post(client, b"{not json")
    assert response.status_code == 400 and "malformed" in response.json()["error"]


def test_unknown_event_type_and_unknown_item_are_answered_200(client, hooks, connection):
    unknown_type = plaid_sandbox_hooks.plaid_webhook_body(
        connection.sandbox_account, "HOLDINGS", "DEFAULT_UPDATE"
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


def test_plaid_sync_updates_available_syncs_once_even_when_redelivered(hooks, connection):
    connection_sync(connection.pk, policy=NO_WAIT)
    statuses = plaid_sandbox_hooks.plaid_webhook_send(
        connection.sandbox_account,
        "TRANSACTIONS",
        "SYNC_UPDATES_AVAILABLE",
        url=f"{hooks.url}{PLAID_URL}",
        duplicate=True,
    )
    assert statuses == [200, 200]
    event = WebhookEvent.objects.get(provider="plaid")
    assert event.status == Status.PROCESSED and event.deliveries == 2
    assert event.connection_id == connection.pk
    runs = SyncRun.objects.filter(connection=connection, trigger=SyncRun.Trigger.WEBHOOK)
    assert runs.count() == 1
    raw = plain_database()[WebhookEvent._meta.db_table].find_one({"_id": event.pk})
    assert raw["payload"].subtype == 6
    assert connection.sandbox_account.encode() not in bytes(raw["payload"])

    # Deleting this source's data takes its events too.
    from sources.services import connection_disconnect

    connection_disconnect(connection=fresh(connection), delete_data=True)
    assert not WebhookEvent.objects.filter(pk=event.pk).exists()


def test_plaid_login_required_and_revocation(client, hooks, connection):
    error = plaid_sandbox_hooks.plaid_webhook_body(
        connection.sandbox_account,
        "ITEM",
        "ERROR",
        error=plaid_sandbox_hooks.plaid_webhook_error(),
    )
    assert plaid_post(client, error).status_code == 200
    assert fresh(connection).status == UserDataSource.Status.REAUTH_REQUIRED

    expiring = plaid_sandbox_hooks.plaid_webhook_body(
        connection.sandbox_account, "ITEM", "PENDING_DISCONNECT"
    )
    plaid_post(client, expiring)
    assert "Reconnect" in fresh(connection).notice

    revoked = plaid_sandbox_hooks.plaid_webhook_body(
        connection.sandbox_account, "ITEM", "USER_PERMISSION_REVOKED"
    )
    plaid_post(client, revoked)
    connection = fresh(connection)
    assert connection.status == UserDataSource.Status.DISCONNECTED
    assert connection.credentials is None


def test_staff_replay_and_payload_need_a_reason_and_are_in_the_ledger(client, hooks, connection):
    from ingestion.models import AccessLedgerEntry
    from tests.factories import UserFactory

    body = plaid_sandbox_hooks.plaid_webhook_body(
        connection.sandbox_account, "TRANSACTIONS", "SYNC_UPDATES_AVAILABLE"
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
    assert connection.sandbox_account not in hidden and "Show payload" in hidden
    assert connection.sandbox_account not in client.get(detail, {"reason": "x"}).content.decode()
    reveal = f"/admin/ingestion/webhookevent/{event.pk}/payload/"
    shown = client.post(reveal, {"reason": "checking the item id"}).content.decode()
    assert connection.sandbox_account in shown
    entries = AccessLedgerEntry.objects.filter(subject=connection.user).order_by("created_at")
    assert [(e.action, e.reason, e.actor_id) for e in entries] == [
        ("replay", "support ticket 42", staff.pk),
        ("view", "checking the item id", staff.pk),
    ]
