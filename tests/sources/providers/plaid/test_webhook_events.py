"""Each Plaid webhook event, as Plaid documents it (fixtures/webhook_*.json), does what it asks
to the Item's connection: a sync, a new login, a notice, a disconnect."""

from __future__ import annotations

import uuid

import pytest

from ingestion.models import WebhookEvent
from ingestion.webhooks import IncomingEvent, webhook_event_store
from sources.models import UserDataSource
from tests.ingestion.conftest import fresh
from tests.sources.providers.kit import fixture

pytestmark = pytest.mark.django_db(transaction=True)
Status = UserDataSource.Status


def deliver(connection: UserDataSource, name: str) -> WebhookEvent:
    """The recorded event, addressed to the connection's Item, stored as a verified delivery."""
    payload = {**fixture("plaid", name), "item_id": connection.external_account_id}
    incoming = IncomingEvent(
        dedup_key=uuid.uuid4().hex,
        event_type=f"{payload['webhook_type']}.{payload['webhook_code']}",
        payload=payload,
    )
    event, _ = webhook_event_store(provider=connection.provider, event=incoming)
    event.refresh_from_db()
    assert event.status == WebhookEvent.Status.PROCESSED, event.error
    assert event.connection_id == connection.pk
    return event


def test_sync_updates_available_asks_for_a_sync(connection, settings):
    settings.SIBLING_SYNC_ON_DUE = True  # the requested sync runs inline in tests
    deliver(connection, "webhook_transactions_sync_updates_available")
    assert connection.runs.get().outcome == "success"


def test_an_item_error_asking_for_a_new_login_asks_the_person_to_reconnect(connection):
    deliver(connection, "webhook_item_error")
    assert fresh(connection).status == Status.REAUTH_REQUIRED


def test_a_pending_disconnect_tells_the_person_to_reconnect(connection):
    deliver(connection, "webhook_item_pending_disconnect")
    assert "Reconnect" in fresh(connection).notice


def test_a_revoked_permission_disconnects_the_item(connection):
    deliver(connection, "webhook_item_user_permission_revoked")
    after = fresh(connection)
    assert after.status == Status.DISCONNECTED and after.credentials is None


@pytest.mark.parametrize(
    "name",
    [
        "webhook_transactions_initial_update",
        "webhook_transactions_historical_update",
        "webhook_transactions_default_update",
        "webhook_transactions_removed",
    ],
)
def test_the_legacy_transactions_webhooks_ask_for_a_sync(connection, settings, name):
    settings.SIBLING_SYNC_ON_DUE = True
    event = deliver(connection, name)
    assert not event.error
    assert connection.runs.get().outcome == "success"


def test_login_repaired_clears_the_sign_in_the_card_asked_for(connection, settings):
    settings.SIBLING_SYNC_ON_DUE = True
    deliver(connection, "webhook_item_error")
    assert fresh(connection).status == Status.REAUTH_REQUIRED
    deliver(connection, "webhook_item_login_repaired")
    after = fresh(connection)
    assert after.status == Status.ACTIVE and after.last_error == ""
    assert connection.runs.get().outcome == "success"


def test_new_accounts_available_is_a_notice(connection):
    deliver(connection, "webhook_item_new_accounts_available")
    after = fresh(connection)
    assert "new accounts" in after.notice and after.status == Status.ACTIVE


def test_a_pending_expiration_tells_the_person_to_reconnect(connection):
    deliver(connection, "webhook_item_pending_expiration")
    assert "Reconnect" in fresh(connection).notice


def test_a_webhook_update_acknowledged_is_taken_as_read(connection):
    event = deliver(connection, "webhook_item_webhook_update_acknowledged")
    assert not event.error
    after = fresh(connection)
    assert after.status == Status.ACTIVE and not after.notice
