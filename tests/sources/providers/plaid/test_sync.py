"""Plaid syncs against its sandbox over HTTP: /transactions/sync pages, cursors, the mutation
Plaid signals during pagination, and an Item that needs a new login."""

import bson
import pytest
import requests
from django.utils import timezone

from ingestion.models import RawPage, SyncRun
from sibling.encryption import value_decrypt
from sources.models import UserDataSource
from sources.providers.plaid import Plaid
from tests.ingestion.conftest import ENVELOPE, fresh, stored, sync
from tests.sources.providers.kit import sandbox_fault

pytestmark = pytest.mark.django_db(transaction=True)
Status = UserDataSource.Status
Outcome = SyncRun.Outcome


def sandbox_transaction_ids(connection) -> set[str]:
    """Everything the sandbox bank holds now, read straight from its API."""
    ids: dict[str, bool] = {}
    cursor = ""
    while True:
        body = requests.post(
            f"{Plaid.url('api')}/transactions/sync",
            json={
                **Plaid.client_credentials(),
                "access_token": fresh(connection).credentials["access_token"],
                "count": 500,
                **({"cursor": cursor} if cursor else {}),
            },
            timeout=30,
        ).json()
        for txn in body["added"] + body["modified"]:
            ids[txn["transaction_id"]] = True
        for txn in body["removed"]:
            ids.pop(txn["transaction_id"], None)
        cursor = body["next_cursor"]
        if not body["has_more"]:
            return set(ids)


def test_backfill_then_a_noop_incremental_sync(connection):
    run = sync(connection)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    assert run.trigger == SyncRun.Trigger.BACKFILL
    records = stored(connection, "external_data")
    assert {r["external_id"] for r in records} == sandbox_transaction_ids(connection)
    assert run.created == len(records) and run.api_calls == run.pages
    connection = fresh(connection)
    assert connection.cursors["transactions"]
    assert connection.last_success_at and connection.backfill_progress is None
    assert connection.records_stored == len(records)
    assert connection.next_sync_at > timezone.now()

    # Every value is ciphertext (amounts and categories too); only the envelope is readable.
    raw = records[0]
    assert raw["sealed"].subtype == 6 and "data" not in raw
    assert set(raw) == ENVELOPE | {"_id"}
    data = value_decrypt(raw["sealed"], owner_id=connection.user_id)
    assert set(data) >= {"name", "account_id", "amount", "date", "category"}
    for value in (data["name"], data["date"], str(data["amount"])):
        assert value.encode() not in bson.encode(raw)
    assert RawPage.objects.filter(connection=connection).count() == run.pages

    again = sync(connection)
    assert again.outcome == Outcome.SUCCESS
    assert again.api_calls == 1 and again.created == 0


def test_new_activity_updates_and_deletes(connection):
    sync(connection)
    sandbox_fault(connection, "new_activity", count=2)
    run = sync(connection)
    assert run.outcome == Outcome.SUCCESS
    assert run.created > 0 and (run.updated > 0 or run.deleted > 0)
    stored_ids = {r["external_id"] for r in stored(connection, "external_data")}
    assert stored_ids == sandbox_transaction_ids(connection)


def test_mutation_during_pagination_restarts_without_duplicates(connection):
    sandbox_fault(connection, "plaid_mutation")
    run = sync(connection)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    records = stored(connection, "external_data")
    ids = [r["external_id"] for r in records]
    assert len(ids) == len(set(ids))
    assert set(ids) == sandbox_transaction_ids(connection)


def test_login_required_gives_reauth_required(connection):
    sandbox_fault(connection, "revoke")
    run = sync(connection)
    assert run.outcome == Outcome.FAILED
    connection = fresh(connection)
    assert connection.status == Status.REAUTH_REQUIRED
    assert connection.last_error == Plaid.reauth_message
