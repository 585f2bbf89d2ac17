"""Scheduled ingestion end to end: the real clients against the sandbox over HTTP, the
processors, storage and cursors; then the faults a provider can throw at a sync.

A provider's own sync tests (its streams, its paging, its own faults) live in
tests/sources/providers/<id>/; these use whichever registered provider has the auth mode the
machinery under test needs."""

import threading

import pytest
from django.utils import timezone

from ingestion.models import QuarantinedItem, SyncRun
from ingestion.tokens import OAuthTokens
from sibling.mongo import plain_database
from sources.models import UserDataSource
from tests.ingestion.conftest import fresh, sync
from tests.sources.providers.kit import sandbox_fault

pytestmark = pytest.mark.django_db(transaction=True)
Status = UserDataSource.Status
Outcome = SyncRun.Outcome


def test_malformed_items_are_quarantined_and_the_rest_stored(key_connection):
    sandbox_fault(key_connection, "malformed")
    run = sync(key_connection)
    assert run.outcome == Outcome.PARTIAL
    assert run.quarantined > 0 and run.created > 0
    item = QuarantinedItem.objects.filter(connection=key_connection).first()
    assert item.reason and item.provider == key_connection.provider
    raw_item = plain_database()[QuarantinedItem._meta.db_table].find_one({"_id": item.pk})
    assert raw_item["item"].subtype == 6


def test_server_error_bursts_are_retried(key_connection):
    sandbox_fault(key_connection, "server_error", count=2)
    run = sync(key_connection)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    assert run.api_calls == run.pages + 2


def test_a_long_rate_limit_defers_the_connection(key_connection):
    sandbox_fault(key_connection, "rate_limit", count=20)
    run = sync(key_connection)
    assert run.outcome == Outcome.DEFERRED
    connection = fresh(key_connection)
    assert connection.status == Status.ACTIVE and connection.consecutive_failures == 0
    assert connection.next_sync_at > timezone.now()


def test_expired_access_token_is_refreshed_and_saved_before_use(oauth_connection):
    before = fresh(oauth_connection).credentials["access_token"]
    sandbox_fault(oauth_connection, "expire_access_token")
    run = sync(oauth_connection)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    assert fresh(oauth_connection).credentials["access_token"] != before


def test_concurrent_refreshes_spend_the_refresh_token_once(oauth_connection):
    sandbox_fault(oauth_connection, "expire_access_token")
    tokens = [OAuthTokens(fresh(oauth_connection)) for _ in range(4)]
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
    assert sync(oauth_connection).outcome == Outcome.SUCCESS


def test_rotating_refresh_tokens_survive_a_sync_and_another_token_user_at_once(
    oauth_connection, settings
):
    # The lease lets one sync run at a time, but a sync can still meet another user of the same
    # tokens (a watch renewal, a second process) that needs a new one at the same moment.
    settings.SIBLING_SANDBOX_ROTATING_CLIENTS = {
        oauth_connection.provider_class.client_credentials()["client_id"]
    }
    first_refresh_token = fresh(oauth_connection).credentials["refresh_token"]
    sandbox_fault(oauth_connection, "expire_access_token")
    barrier = threading.Barrier(2)
    results = {}

    def one_sync():
        barrier.wait()
        results["run"] = sync(oauth_connection, trigger=SyncRun.Trigger.MANUAL)

    def other_token_user():
        barrier.wait()
        tokens = OAuthTokens(fresh(oauth_connection))
        tokens.refresh()
        results["token"] = tokens.credentials["access_token"]

    threads = [threading.Thread(target=one_sync), threading.Thread(target=other_token_user)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results["run"].outcome == Outcome.SUCCESS, results["run"].error_message
    assert results["token"]
    connection = fresh(oauth_connection)
    assert connection.status == Status.ACTIVE
    assert connection.credentials["refresh_token"] != first_refresh_token  # rotated
    sandbox_fault(oauth_connection, "expire_access_token")
    assert sync(oauth_connection).outcome == Outcome.SUCCESS  # the stored token still works


def test_invalid_grant_gives_reauth_required_without_retry(oauth_connection):
    sandbox_fault(oauth_connection, "revoke")
    sandbox_fault(oauth_connection, "expire_access_token")
    run = sync(oauth_connection)
    assert run.outcome == Outcome.FAILED and run.error_class == "ReauthRequired"
    connection = fresh(oauth_connection)
    assert connection.status == Status.REAUTH_REQUIRED and connection.next_sync_at is None


def test_repeated_failures_stop_the_connection_and_say_why(key_connection, settings):
    settings.SIBLING_SYNC_MAX_FAILURES = 2
    for _ in range(2):
        sandbox_fault(key_connection, "server_error", count=50)
        UserDataSource.objects.filter(pk=key_connection.pk).update(next_sync_at=timezone.now())
        sync(key_connection)
    connection = fresh(key_connection)
    assert connection.status == Status.ERROR and connection.consecutive_failures == 2
    assert f"{connection.provider_class.name} answered 5" in connection.last_error
