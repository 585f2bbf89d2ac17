"""Scheduled ingestion end to end: the real clients against the sandbox over HTTP, the
processors, storage and cursors; then the faults a provider can throw at a sync."""

import threading

import bson
import pytest
import requests
from django.utils import timezone

from ingestion.models import QuarantinedItem, RawPage, SyncRun
from ingestion.runner import connection_sync
from ingestion.storage import record_decode, records_collection
from ingestion.tokens import OAuthTokens
from sibling.encryption import value_decrypt
from sibling.mongo import plain_database
from sources.models import UserDataSource
from sources.providers.plaid import Plaid
from sources.sandbox.faults import fault_set
from tests.ingestion.conftest import ENVELOPE, NO_WAIT, fresh

pytestmark = pytest.mark.django_db(transaction=True)
Status = UserDataSource.Status
Outcome = SyncRun.Outcome


def sync(connection, **kwargs):
    return connection_sync(connection.pk, policy=NO_WAIT, **kwargs)


def stored(connection, collection):
    return list(
        records_collection(collection).find(
            {"user": connection.user_id, "connection": connection.pk}
        )
    )


def sandbox_transaction_ids(connection) -> set[str]:
    """Everything the sandbox bank holds now, read straight from its API."""
    ids: dict[str, bool] = {}
    cursor = ""
    while True:
        body = requests.post(
            f"{Plaid.url('api')}/transactions/sync",
            json={
                **{"client_id": "sandbox-plaid-client", "secret": "sandbox-plaid-secret"},
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


def test_plaid_backfill_then_a_noop_incremental_sync(plaid_connection):
    run = sync(plaid_connection)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    assert run.trigger == SyncRun.Trigger.BACKFILL
    records = stored(plaid_connection, "external_data")
    assert {r["external_id"] for r in records} == sandbox_transaction_ids(plaid_connection)
    assert run.created == len(records) and run.api_calls == run.pages
    connection = fresh(plaid_connection)
    assert connection.cursors["transactions"]
    assert connection.last_success_at and connection.backfill_progress is None
    assert connection.records_stored == len(records)
    assert connection.next_sync_at > timezone.now()

    # Every value is ciphertext (amounts and categories too); only the envelope is readable.
    raw = records[0]
    assert raw["sealed"].subtype == 6 and "data" not in raw
    assert set(raw) == ENVELOPE | {"_id"}
    data = value_decrypt(raw["sealed"], owner_id=plaid_connection.user_id)
    assert set(data) >= {"name", "account_id", "amount", "date", "category"}
    for value in (data["name"], data["date"], str(data["amount"])):
        assert value.encode() not in bson.encode(raw)
    assert RawPage.objects.filter(connection=plaid_connection).count() == run.pages

    again = sync(plaid_connection)
    assert again.outcome == Outcome.SUCCESS
    assert again.api_calls == 1 and again.created == 0


def test_plaid_new_activity_updates_and_deletes(plaid_connection):
    sync(plaid_connection)
    fault_set("plaid", plaid_connection.sandbox_account, "new_activity", count=2)
    run = sync(plaid_connection)
    assert run.outcome == Outcome.SUCCESS
    assert run.created > 0 and (run.updated > 0 or run.deleted > 0)
    stored_ids = {r["external_id"] for r in stored(plaid_connection, "external_data")}
    assert stored_ids == sandbox_transaction_ids(plaid_connection)


def test_plaid_mutation_during_pagination_restarts_without_duplicates(plaid_connection):
    fault_set("plaid", plaid_connection.sandbox_account, "plaid_mutation")
    run = sync(plaid_connection)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    records = stored(plaid_connection, "external_data")
    ids = [r["external_id"] for r in records]
    assert len(ids) == len(set(ids))
    assert set(ids) == sandbox_transaction_ids(plaid_connection)


def test_plaid_login_required_gives_reauth_required(plaid_connection):
    fault_set("plaid", plaid_connection.sandbox_account, "revoke")
    run = sync(plaid_connection)
    assert run.outcome == Outcome.FAILED
    connection = fresh(plaid_connection)
    assert connection.status == Status.REAUTH_REQUIRED
    assert connection.last_error == Plaid.reauth_message


def test_malformed_items_are_quarantined_and_the_rest_stored(plaid_connection):
    fault_set("plaid", plaid_connection.sandbox_account, "malformed")
    run = sync(plaid_connection)
    assert run.outcome == Outcome.PARTIAL
    assert run.quarantined > 0 and run.created > 0
    item = QuarantinedItem.objects.filter(connection=plaid_connection).first()
    assert item.reason and item.provider == "plaid"
    raw_item = plain_database()[QuarantinedItem._meta.db_table].find_one({"_id": item.pk})
    assert raw_item["item"].subtype == 6


def test_server_error_bursts_are_retried(plaid_connection):
    fault_set("plaid", plaid_connection.sandbox_account, "server_error", count=2)
    run = sync(plaid_connection)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    assert run.api_calls == run.pages + 2


def test_a_long_rate_limit_defers_the_connection(rescuetime_connection):
    fault_set("rescuetime", rescuetime_connection.sandbox_account, "rate_limit", count=20)
    run = sync(rescuetime_connection)
    assert run.outcome == Outcome.DEFERRED
    connection = fresh(rescuetime_connection)
    assert connection.status == Status.ACTIVE and connection.consecutive_failures == 0
    assert connection.next_sync_at > timezone.now()


def test_rescuetime_hours_and_days(rescuetime_connection):
    run = sync(rescuetime_connection)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    kinds = {r["kind"] for r in stored(rescuetime_connection, "behavioral_data")}
    assert kinds == {"productivity_hour", "productivity_day"}
    again = sync(rescuetime_connection)
    assert again.api_calls == 2  # one per stream: today's hours, the daily feed


def test_rescuetime_key_no_longer_accepted_gives_reauth_required(rescuetime_connection):
    fault_set("rescuetime", rescuetime_connection.sandbox_account, "revoke")
    sync(rescuetime_connection)
    assert fresh(rescuetime_connection).status == Status.REAUTH_REQUIRED


def test_fitbit_days_and_sleep(fitbit_connection):
    run = sync(fitbit_connection)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    records = stored(fitbit_connection, "behavioral_data")
    kinds = {r["kind"] for r in records}
    assert kinds == {"activity_day", "heart_rate_day", "sleep_session"}
    steps = [r for r in records if r["kind"] == "activity_day"]
    assert all("data" not in r for r in records)
    assert all(record_decode(r, owner_id=r["user"])["data"]["steps"] >= 0 for r in steps)
    assert len({r["external_id"] for r in steps}) == len(steps)
    again = sync(fitbit_connection)
    assert again.outcome == Outcome.SUCCESS and again.api_calls == 3  # one per stream


def test_expired_access_token_is_refreshed_and_saved_before_use(fitbit_connection):
    before = fresh(fitbit_connection).credentials["access_token"]
    fault_set("google", fitbit_connection.sandbox_account, "expire_access_token")
    run = sync(fitbit_connection)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    assert fresh(fitbit_connection).credentials["access_token"] != before


def test_concurrent_refreshes_spend_the_refresh_token_once(fitbit_connection):
    fault_set("google", fitbit_connection.sandbox_account, "expire_access_token")
    tokens = [OAuthTokens(fresh(fitbit_connection)) for _ in range(4)]
    barrier = threading.Barrier(len(tokens))
    results = []

    def refresh(manager):
        barrier.wait()
        manager.refresh()
        results.append(manager.credentials["access_token"])

    threads = [threading.Thread(target=refresh, args=(m,)) for m in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1  # one refresh; the others reloaded its token
    assert sync(fitbit_connection).outcome == Outcome.SUCCESS


def test_rotating_refresh_tokens_survive_a_sync_and_another_token_user_at_once(
    fitbit_connection, settings
):
    # The lease lets one sync run at a time, but a sync can still meet another user of the same
    # tokens (a watch renewal, a second process) that needs a new one at the same moment.
    settings.SIBLING_SANDBOX_ROTATING_CLIENTS = {"sandbox-fitbit-client"}
    first_refresh_token = fresh(fitbit_connection).credentials["refresh_token"]
    fault_set("google", fitbit_connection.sandbox_account, "expire_access_token")
    barrier = threading.Barrier(2)
    results = {}

    def one_sync():
        barrier.wait()
        results["run"] = sync(fitbit_connection, trigger=SyncRun.Trigger.MANUAL)

    def other_token_user():
        barrier.wait()
        tokens = OAuthTokens(fresh(fitbit_connection))
        tokens.refresh()
        results["token"] = tokens.credentials["access_token"]

    threads = [threading.Thread(target=one_sync), threading.Thread(target=other_token_user)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results["run"].outcome == Outcome.SUCCESS, results["run"].error_message
    assert results["token"]
    connection = fresh(fitbit_connection)
    assert connection.status == Status.ACTIVE
    assert connection.credentials["refresh_token"] != first_refresh_token  # rotated
    fault_set("google", fitbit_connection.sandbox_account, "expire_access_token")
    assert sync(fitbit_connection).outcome == Outcome.SUCCESS  # the stored token still works


def test_invalid_grant_gives_reauth_required_without_retry(fitbit_connection):
    fault_set("google", fitbit_connection.sandbox_account, "revoke")
    fault_set("google", fitbit_connection.sandbox_account, "expire_access_token")
    run = sync(fitbit_connection)
    assert run.outcome == Outcome.FAILED and run.error_class == "ReauthRequired"
    connection = fresh(fitbit_connection)
    assert connection.status == Status.REAUTH_REQUIRED and connection.next_sync_at is None


def test_repeated_failures_stop_the_connection_and_say_why(rescuetime_connection, settings):
    settings.SIBLING_SYNC_MAX_FAILURES = 2
    for _ in range(2):
        fault_set("rescuetime", rescuetime_connection.sandbox_account, "server_error", count=50)
        UserDataSource.objects.filter(pk=rescuetime_connection.pk).update(
            next_sync_at=timezone.now()
        )
        sync(rescuetime_connection)
    connection = fresh(rescuetime_connection)
    assert connection.status == Status.ERROR and connection.consecutive_failures == 2
    assert "RescueTime answered 5" in connection.last_error
