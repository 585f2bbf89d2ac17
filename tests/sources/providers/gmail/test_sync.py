"""Gmail: the error mapping, then whole syncs over HTTP against the sandbox (backfill,
incremental, history 404, a killed backfill, malformed items). The processor's unit tests are in
test_processors.py."""

from __future__ import annotations

import json
import math
import time
import uuid
from datetime import UTC, datetime, timedelta

import bson
import pytest
import requests
from django.utils import timezone

from ingestion.errors import AccessExpired, PermanentError, RateLimited, TransientError
from ingestion.http import DEFAULT_RATE_LIMIT_WAIT_S, RetryPolicy
from ingestion.models import QuarantinedItem, SyncRun
from ingestion.runner import connection_sync
from ingestion.storage import record_decode
from sibling.mongo import plain_database
from sources.models import UserDataSource
from sources.providers.gmail.client import GmailSyncClient, NotFound, gmail_check
from sources.providers.gmail.provider import Gmail
from sources.providers.gmail.sandbox import Mailbox
from sources.sandbox.faults import fault_set
from sources.sandbox.testing import google_credentials
from sources.services import connection_disconnect, connection_upsert
from tests.factories import UserFactory
from tests.sources.providers.kit import processor_killed_on_page

Outcome = SyncRun.Outcome
NO_WAIT = RetryPolicy(sleep=lambda seconds: None)
BACKFILL_DAYS = 7
METADATA_HEADERS = ["From", "To", "Subject", "Date"]
SENSITIVE = {"from", "to", "subject", "snippet"}


# --- Error mapping -----------------------------------------------------------------------------


def google_error(status: int, reason: str, api_status: str = "", headers=None):
    response = requests.Response()
    response.status_code = status
    response.headers.update(headers or {})
    body = {
        "error": {
            "code": status,
            "message": "m",
            "errors": [{"domain": "usageLimits", "reason": reason, "message": "m"}],
            **({"status": api_status} if api_status else {}),
        }
    }
    response._content = json.dumps(body).encode()
    return response


@pytest.mark.parametrize(
    ("status", "reason", "api_status", "expected"),
    [
        (401, "authError", "UNAUTHENTICATED", AccessExpired),
        (403, "userRateLimitExceeded", "", RateLimited),
        (403, "rateLimitExceeded", "", RateLimited),
        (403, "quotaOther", "RESOURCE_EXHAUSTED", RateLimited),
        (429, "rateLimitExceeded", "RESOURCE_EXHAUSTED", RateLimited),
        (429, "", "", RateLimited),
        (403, "insufficientPermissions", "PERMISSION_DENIED", PermanentError),
        (403, "forbidden", "PERMISSION_DENIED", PermanentError),
        (400, "invalidArgument", "INVALID_ARGUMENT", PermanentError),
        (404, "notFound", "NOT_FOUND", NotFound),
        (500, "backendError", "INTERNAL", TransientError),
        (503, "backendError", "UNAVAILABLE", TransientError),
    ],
)
def test_google_errors_map_to_what_the_runner_does(status, reason, api_status, expected):
    with pytest.raises(expected) as caught:
        gmail_check(google_error(status, reason, api_status))
    if expected is PermanentError:
        assert not isinstance(caught.value, RateLimited | NotFound)


def test_rate_limits_honour_retry_after():
    with pytest.raises(RateLimited) as caught:
        gmail_check(google_error(403, "userRateLimitExceeded", headers={"Retry-After": "12"}))
    assert caught.value.retry_after_s == 12.0


def test_an_error_without_a_json_body_still_maps_by_status():
    response = requests.Response()
    response.status_code = 502
    response._content = b"<html>Bad gateway</html>"
    with pytest.raises(TransientError):
        gmail_check(response)
    response.status_code = 200
    gmail_check(response)


# --- Syncs against the sandbox -----------------------------------------------------------------


@pytest.fixture
def gmail_sandbox(live_server, settings):
    settings.SIBLING_SANDBOX_BASE_URL = f"{live_server.url}/sandbox"
    settings.SIBLING_BACKFILL_DAYS = BACKFILL_DAYS
    return live_server


def oauth_credentials(email: str) -> dict:
    credentials = google_credentials(Gmail, email)
    assert set(credentials) == {
        "uid",
        "access_token",
        "refresh_token",
        "token_type",
        "scope",
        "expires_at",
    }
    return credentials


@pytest.fixture
def gmail_connection(gmail_sandbox):
    email = f"gmail-{uuid.uuid4().hex[:8]}@example.com"
    credentials = oauth_credentials(email)
    connection = connection_upsert(
        user=UserFactory(),
        provider=Gmail,
        external_account_id=Gmail.external_account_id(uid=email, credentials=credentials),
        credentials=credentials,
        account_label=email,
        granted_scopes=credentials["scope"].split(),
    )
    connection.sandbox_email = email
    return connection


@pytest.fixture
def window_start(monkeypatch) -> datetime:
    """A pinned backfill window, so the sandbox's own answer can be computed exactly."""
    start = (timezone.now() - timedelta(days=BACKFILL_DAYS)).replace(microsecond=0)
    monkeypatch.setattr(GmailSyncClient, "backfill_start", lambda self: start)
    return start


def batches(messages: int, size: int = 50) -> int:
    """Batch requests reading this many messages (GMAIL_BATCH_SIZE, 50 by default)."""
    return math.ceil(messages / size)


def chunks(messages: int, size: int = 50) -> list[int]:
    """The number of calls in each batch reading this many messages."""
    return [min(size, messages - start) for start in range(0, messages, size)]


def sync(connection: UserDataSource, **kwargs) -> SyncRun:
    run = connection_sync(connection.pk, policy=kwargs.pop("policy", NO_WAIT), **kwargs)
    assert run is not None
    return run


def fresh(connection: UserDataSource) -> UserDataSource:
    return UserDataSource.objects.get(pk=connection.pk)


def stored(connection: UserDataSource) -> list[dict]:
    return list(
        plain_database()["external_data"].find(
            {"user": connection.user_id, "provider": "gmail", "kind": "email_message"}
        )
    )


def stored_ids(connection: UserDataSource) -> set[str]:
    return {doc["external_id"] for doc in stored(connection)}


def sandbox_ids(email: str, after_s: int) -> set[str]:
    """What the sandbox mailbox holds in the window now, from its own model."""
    mailbox = Mailbox.load(email)
    return {
        stub.id
        for ordinal in range(mailbox.first_ordinal, mailbox.newest_ordinal() + 1)
        for stub in mailbox.day(ordinal)
        if stub.ms >= after_s * 1000
    }


def sandbox_history_id(email: str) -> str:
    return str(Mailbox.load(email).history_id)


def sandbox_fault(email: str, fault: str, count: int = 1) -> None:
    """The sandbox's control endpoint, as a developer would use it."""
    response = requests.post(
        f"{Gmail.url('api').rsplit('/google/', 1)[0]}/_faults",
        json={"provider": "google", "account": email, "fault": fault, "count": count},
        timeout=10,
    )
    assert response.status_code == 200, response.text


def message_from_sandbox(connection: UserDataSource, message_id: str) -> dict:
    response = requests.get(
        f"{Gmail.url('api')}/users/me/messages/{message_id}",
        params={"format": "metadata", "metadataHeaders": METADATA_HEADERS},
        headers={"Authorization": f"Bearer {fresh(connection).credentials['access_token']}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()


def decoded(document: dict, owner_id) -> dict:
    """plain_database() does not decrypt: unseal as the application would read it."""
    return record_decode(document, owner_id=owner_id)


def backfilled(connection: UserDataSource, window_start: datetime) -> tuple[SyncRun, set[str]]:
    expected = sandbox_ids(connection.sandbox_email, int(window_start.timestamp()))
    run = sync(connection)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    return run, expected


@pytest.mark.django_db(transaction=True)
def test_first_sync_backfills_the_window_as_encrypted_metadata(gmail_connection, window_start):
    connection = gmail_connection
    run, expected = backfilled(connection, window_start)
    assert 10 <= len(expected) < 500  # one list page
    assert stored_ids(connection) == expected
    assert run.trigger == SyncRun.Trigger.BACKFILL
    assert (run.pages, run.fetched, run.created, run.quarantined) == (
        1,
        len(expected),
        len(expected),
        0,
    )
    # users.getProfile, one messages.list, one batch of messages.get per 50 messages.
    assert run.api_calls == 2 + batches(len(expected))
    after = fresh(connection)
    assert after.cursors == {
        "messages": {"history_id": sandbox_history_id(connection.sandbox_email)}
    }
    assert after.backfill_progress is None
    assert after.records_stored == len(expected)

    documents = stored(connection)
    for document in documents:
        # Nothing of the message is readable, its labels and size included: only the envelope.
        assert "data" not in document
        assert isinstance(document["sealed"], bson.Binary) and document["sealed"].subtype == 6
    document = documents[0]
    record = decoded(document, connection.user_id)["data"]
    received = message_from_sandbox(connection, document["external_id"])
    headers = {h["name"]: h["value"] for h in received["payload"]["headers"]}
    assert set(headers) == set(METADATA_HEADERS)
    assert record["subject"] == headers["Subject"] != ""
    assert record["subject"].encode() not in bson.encode(document)
    assert record["from"] == headers["From"]
    assert len(record["to"]) == 1 and headers["To"].endswith(f"<{record['to'][0]}>")
    assert record["snippet"] == received["snippet"]
    assert record["labels"] == received["labelIds"]
    assert record["size"] == received["sizeEstimate"]
    assert record["thread_id"] == received["threadId"]
    expected_when = datetime.fromtimestamp(int(received["internalDate"]) / 1000, tz=UTC)
    assert record["internal_date"] == expected_when == document["occurred_at"]


@pytest.mark.django_db(transaction=True)
def test_an_incremental_sync_with_nothing_new_costs_one_call(gmail_connection, window_start):
    connection = gmail_connection
    backfilled(connection, window_start)
    cursor = fresh(connection).cursors
    run = sync(connection)
    assert run.outcome == Outcome.SUCCESS
    assert run.api_calls == 1
    assert (run.pages, run.fetched, run.created, run.deleted) == (1, 0, 0, 0)
    assert fresh(connection).cursors == cursor


@pytest.mark.django_db(transaction=True)
def test_new_activity_is_added_and_deleted_mail_removed(gmail_connection, window_start):
    connection = gmail_connection
    email = connection.sandbox_email
    _, before = backfilled(connection, window_start)
    sandbox_fault(email, "new_activity")
    expected = sandbox_ids(email, int(window_start.timestamp()))
    added, gone = expected - before, before - expected
    assert (len(added), len(gone)) == (3, 1)

    run = sync(connection)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    assert (run.created, run.deleted) == (3, 1)
    assert run.api_calls == 1 + 1  # history.list, then one batch: messages.get of each added
    assert stored_ids(connection) == expected
    assert fresh(connection).cursors["messages"] == {"history_id": sandbox_history_id(email)}
    assert sync(connection).api_calls == 1


@pytest.mark.django_db(transaction=True)
def test_a_history_id_gmail_no_longer_keeps_means_a_full_sync_of_the_gap(
    gmail_connection, window_start
):
    """A mailbox left for days (paused, or disconnected and reconnected): its history id has
    expired, so the mailbox is listed again, but only from a day before its last successful
    sync, not over the whole history window."""
    connection = gmail_connection
    _, expected = backfilled(connection, window_start)
    last_success = timezone.now() - timedelta(days=3)
    UserDataSource.objects.filter(pk=connection.pk).update(
        cursors={"messages": {"history_id": "1"}}, last_success_at=last_success
    )
    gap = sandbox_ids(connection.sandbox_email, int((last_success - timedelta(days=1)).timestamp()))
    assert 0 < len(gap) < len(expected)
    run = sync(connection)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    # history.list (404), users.getProfile, messages.list, the batches of messages.get.
    assert run.api_calls == 3 + batches(len(gap))
    assert run.fetched == len(gap)
    assert run.created == 0  # upserted by id: nothing duplicates
    assert stored_ids(connection) == expected
    assert len(stored(connection)) == len(expected)
    assert fresh(connection).cursors["messages"] == {
        "history_id": sandbox_history_id(connection.sandbox_email)
    }


@pytest.mark.django_db(transaction=True)
def test_a_reconnected_mailbox_fetches_only_the_gap(gmail_connection, window_start):
    """Disconnected (its data kept), then connected again: the cursor survives the new grant,
    and the first sync after it reads only what changed since."""
    connection = gmail_connection
    first, expected = backfilled(connection, window_start)
    cursors = fresh(connection).cursors
    connection_disconnect(connection=fresh(connection), delete_data=False)
    credentials = oauth_credentials(connection.sandbox_email)
    again = connection_upsert(
        user=connection.user,
        provider=Gmail,
        external_account_id=connection.external_account_id,
        credentials=credentials,
        account_label=connection.sandbox_email,
        granted_scopes=credentials["scope"].split(),
    )
    assert again.pk == connection.pk and fresh(again).cursors == cursors
    run = sync(again)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    assert run.api_calls == 1 and run.fetched == 0  # history.list: nothing new
    assert first.api_calls > run.api_calls
    assert stored_ids(connection) == expected


@pytest.mark.django_db(transaction=True)
def test_a_killed_backfill_resumes_from_its_last_stored_page(
    gmail_connection, monkeypatch, settings
):
    connection = gmail_connection
    settings.GMAIL_BATCH_SIZE = 4  # three batches per page of 10
    monkeypatch.setattr(GmailSyncClient, "page_size", 10)
    processor_killed_on_page(Gmail, monkeypatch)
    killed = sync(connection)
    assert killed.outcome == Outcome.FAILED and killed.pages == 1
    cursor = fresh(connection).cursors["messages"]
    assert set(cursor) == {"history_id", "page_token", "after"}
    # The window comes from settings.SIBLING_BACKFILL_DAYS and is kept for the resumed listing.
    assert abs(cursor["after"] - (time.time() - BACKFILL_DAYS * 86400)) < 120
    assert 0 < fresh(connection).backfill_progress < 1
    assert len(stored(connection)) == 10

    monkeypatch.undo()
    monkeypatch.setattr(GmailSyncClient, "page_size", 10)
    expected = sandbox_ids(connection.sandbox_email, cursor["after"])
    run = sync(connection)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    remaining = len(expected) - 10
    # No profile call and no page fetched twice: the listing resumes at the stored token.
    full_pages, last_page = divmod(remaining, 10)
    listings = full_pages + (1 if last_page else 0)
    assert run.api_calls == listings + full_pages * 3 + math.ceil(last_page / 4)
    assert (run.created, run.updated) == (remaining, 0)
    assert stored_ids(connection) == expected
    after = fresh(connection)
    assert after.cursors["messages"] == {"history_id": cursor["history_id"]}
    assert after.backfill_progress is None


@pytest.mark.django_db(transaction=True)
def test_malformed_messages_are_quarantined_and_the_rest_stored(gmail_connection, window_start):
    connection = gmail_connection
    sandbox_fault(connection.sandbox_email, "malformed", count=2)
    expected = sandbox_ids(connection.sandbox_email, int(window_start.timestamp()))
    run = sync(connection)
    assert run.outcome == Outcome.PARTIAL
    assert (run.quarantined, run.created) == (2, len(expected) - 2)
    assert len(stored_ids(connection) & expected) == len(expected) - 2
    reasons = list(
        QuarantinedItem.objects.filter(connection=connection).values_list("reason", flat=True)
    )
    assert len(reasons) == 2
    assert all("internalDate" in reason for reason in reasons)


@pytest.mark.django_db(transaction=True)
def test_expired_token_rate_limit_and_server_error_are_survived(gmail_connection, window_start):
    connection = gmail_connection
    email = connection.sandbox_email
    backfilled(connection, window_start)
    old_token = fresh(connection).credentials["access_token"]
    sandbox_fault(email, "expire_access_token")
    sandbox_fault(email, "rate_limit")
    sandbox_fault(email, "server_error")
    patient = RetryPolicy(sleep=lambda seconds: None, max_inplace_wait_s=60)
    run = sync(connection, policy=patient)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    # 401, then (new token) 429, 500, and the answer.
    assert run.api_calls == 4
    assert fresh(connection).credentials["access_token"] != old_token


@pytest.mark.django_db(transaction=True)
def test_a_long_rate_limit_defers_the_connection(gmail_connection, window_start):
    connection = gmail_connection
    backfilled(connection, window_start)
    sandbox_fault(connection.sandbox_email, "rate_limit")
    run = sync(connection)
    assert run.outcome == Outcome.DEFERRED
    wait = (fresh(connection).next_sync_at - timezone.now()).total_seconds()
    assert 20 < wait <= 30  # the sandbox's Retry-After


@pytest.mark.django_db(transaction=True)
def test_a_message_deleted_between_list_and_get_is_skipped(
    gmail_connection, window_start, monkeypatch
):
    connection = gmail_connection
    messages_get = GmailSyncClient._messages_get
    gone = "0000000000000000"  # well formed, but no message of this mailbox

    def listed_then_deleted(self, ids):
        return messages_get(self, [gone, *ids])

    monkeypatch.setattr(GmailSyncClient, "_messages_get", listed_then_deleted)
    run, expected = backfilled(connection, window_start)
    assert run.api_calls == 2 + batches(len(expected) + 1)
    assert (run.created, run.quarantined) == (len(expected), 0)
    assert stored_ids(connection) == expected


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("fault", ["user_rate_limit_403", "rate_limit_403"])
def test_a_403_rate_limit_defers_the_connection_like_a_429(gmail_connection, window_start, fault):
    # Gmail also answers rate limits with 403 userRateLimitExceeded / rateLimitExceeded:
    # https://developers.google.com/workspace/gmail/api/guides/handle-errors
    connection = gmail_connection
    backfilled(connection, window_start)
    sandbox_fault(connection.sandbox_email, fault)
    run = sync(connection)
    assert run.outcome == Outcome.DEFERRED, run.error_message
    assert "rate limit" in run.error_message
    assert fresh(connection).next_sync_at > timezone.now()
    assert fresh(connection).status == UserDataSource.Status.ACTIVE


@pytest.mark.django_db(transaction=True)
def test_the_watch_renewal_is_accepted_by_the_sandbox(gmail_connection, settings):
    from sources.providers.gmail.sandbox import gmail_push_target
    from sources.providers.gmail.webhooks import watch_renew

    # The request spells labelFilterBehavior as the discovery document's enum does; the
    # sandbox refuses any other spelling, as Google does.
    body = watch_renew(gmail_connection)
    assert body["historyId"].isdigit() and body["expiration"].isdigit()
    assert gmail_push_target(gmail_connection.sandbox_email) is not None


# --- Batches: each part's own answer --------------------------------------------------------------


def batch_sizes(monkeypatch) -> list[int]:
    """The number of calls in each batch request the client sends (recorded as sent)."""
    sizes: list[int] = []
    send = requests.Session.send

    def recording_send(session, request, **kwargs):
        if "/batch/" in request.url:
            sizes.append(request.body.count(b"Content-Type: application/http"))
        return send(session, request, **kwargs)

    monkeypatch.setattr(requests.Session, "send", recording_send)
    return sizes


def fault_in_first_batch(monkeypatch, email: str, *faults: str) -> None:
    """Switch faults on once the messages are listed, so the first batch's parts meet them (the
    sandbox dispatches a batch's parts in order: the first part takes the first fault)."""
    messages_get = GmailSyncClient._messages_get
    armed = []

    def with_faults(self, ids):
        if not armed:
            armed.append(True)
            for fault in faults:
                fault_set("google", email, fault)
        return messages_get(self, ids)

    monkeypatch.setattr(GmailSyncClient, "_messages_get", with_faults)


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.mark.django_db(transaction=True)
def test_a_page_is_read_in_batches_of_the_batch_size(gmail_connection, window_start, settings):
    settings.GMAIL_BATCH_SIZE = 10
    connection = gmail_connection
    expected = sandbox_ids(connection.sandbox_email, int(window_start.timestamp()))
    run = sync(connection)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    assert run.api_calls == 2 + batches(len(expected), 10)
    assert stored_ids(connection) == expected


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("fault", "wait_s"),
    [
        ("rate_limit", 30.0),  # 429 with the sandbox's Retry-After
        ("user_rate_limit_403", DEFAULT_RATE_LIMIT_WAIT_S),  # 403 without one
        ("rate_limit_403", DEFAULT_RATE_LIMIT_WAIT_S),
    ],
)
def test_a_rate_limited_part_is_retried_alone_after_its_wait(
    gmail_connection, window_start, monkeypatch, fault, wait_s
):
    connection = gmail_connection
    expected = sandbox_ids(connection.sandbox_email, int(window_start.timestamp()))
    sizes = batch_sizes(monkeypatch)
    fault_in_first_batch(monkeypatch, connection.sandbox_email, fault)
    sleeps = Sleeps()
    run = sync(connection, policy=RetryPolicy(sleep=sleeps, max_inplace_wait_s=60))
    assert run.outcome == Outcome.SUCCESS, run.error_message
    first, *rest = chunks(len(expected))
    assert sizes == [first, 1, *rest]  # the part retried before the next batch
    assert sleeps == [wait_s]
    assert run.api_calls == 2 + batches(len(expected)) + 1
    assert stored_ids(connection) == expected


@pytest.mark.django_db(transaction=True)
def test_a_rate_limited_part_with_a_long_wait_defers_and_the_page_is_read_again(
    gmail_connection, window_start, monkeypatch
):
    connection = gmail_connection
    expected = sandbox_ids(connection.sandbox_email, int(window_start.timestamp()))
    fault_in_first_batch(monkeypatch, connection.sandbox_email, "user_rate_limit_403")
    run = sync(connection)  # waits of 5 s at most in place: 30 s defers
    assert run.outcome == Outcome.DEFERRED, run.error_message
    assert "rate limit" in run.error_message
    wait = (fresh(connection).next_sync_at - timezone.now()).total_seconds()
    assert 20 < wait <= DEFAULT_RATE_LIMIT_WAIT_S
    assert stored(connection) == [] and fresh(connection).cursors == {}

    monkeypatch.undo()
    run = sync(connection)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    assert stored_ids(connection) == expected


@pytest.mark.django_db(transaction=True)
def test_a_server_error_part_is_retried_alone(gmail_connection, window_start, monkeypatch):
    connection = gmail_connection
    expected = sandbox_ids(connection.sandbox_email, int(window_start.timestamp()))
    sizes = batch_sizes(monkeypatch)
    fault_in_first_batch(monkeypatch, connection.sandbox_email, "server_error", "rate_limit")
    sleeps = Sleeps()
    policy = RetryPolicy(sleep=sleeps, max_inplace_wait_s=60)
    run = sync(connection, policy=policy)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    # The 429 part and the 500 part, sent again together and only them, after the longer wait.
    first, *rest = chunks(len(expected))
    assert sizes == [first, 2, *rest]
    assert sleeps == [30.0]
    assert stored_ids(connection) == expected


@pytest.mark.django_db(transaction=True)
def test_a_part_failing_every_time_fails_the_run_after_the_policy_attempts(
    gmail_connection, window_start, monkeypatch
):
    connection = gmail_connection
    expected = sandbox_ids(connection.sandbox_email, int(window_start.timestamp()))
    sizes = batch_sizes(monkeypatch)
    messages_get = GmailSyncClient._messages_get

    def server_errors(self, ids):
        fault_set("google", connection.sandbox_email, "server_error", count=10_000)
        return messages_get(self, ids)

    monkeypatch.setattr(GmailSyncClient, "_messages_get", server_errors)
    run = sync(connection, policy=RetryPolicy(sleep=lambda s: None, max_attempts=3))
    assert run.outcome == Outcome.FAILED
    assert "kept failing" in run.error_message
    # Every part of the first batch fails each time: sent again until the attempts ran out.
    assert sizes == [chunks(len(expected))[0]] * 3
    assert stored(connection) == []


@pytest.mark.django_db(transaction=True)
def test_an_expired_token_in_the_parts_is_refreshed_once(
    gmail_connection, window_start, monkeypatch
):
    connection = gmail_connection
    expected = sandbox_ids(connection.sandbox_email, int(window_start.timestamp()))
    old_token = fresh(connection).credentials["access_token"]
    sizes = batch_sizes(monkeypatch)
    fault_in_first_batch(monkeypatch, connection.sandbox_email, "expire_access_token")
    run = sync(connection)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    # Every part answered 401; the token was refreshed and every part sent again.
    first, *rest = chunks(len(expected))
    assert sizes == [first, first, *rest]
    assert fresh(connection).credentials["access_token"] != old_token
    assert stored_ids(connection) == expected


@pytest.mark.django_db(transaction=True)
def test_a_token_refused_again_after_the_refresh_asks_to_reconnect(
    gmail_connection, window_start, monkeypatch
):
    connection = gmail_connection
    messages_get = GmailSyncClient._messages_get

    def expired_each_time(self, ids):
        original = self.tokens.refresh

        def refresh_then_expire():
            original()
            fault_set("google", connection.sandbox_email, "expire_access_token")

        self.http.refresh = refresh_then_expire
        fault_set("google", connection.sandbox_email, "expire_access_token")
        return messages_get(self, ids)

    monkeypatch.setattr(GmailSyncClient, "_messages_get", expired_each_time)
    run = sync(connection)
    assert run.outcome == Outcome.FAILED, run.error_message
    assert fresh(connection).status == UserDataSource.Status.REAUTH_REQUIRED
    assert stored(connection) == []


@pytest.mark.parametrize(
    ("value", "valid"), [("1", True), ("100", True), ("0", False), ("101", False)]
)
def test_the_batch_size_is_one_to_a_hundred(value, valid):
    from django.core.exceptions import ImproperlyConfigured

    from sources.providers.config import settings_from_environment
    from tests.sibling.test_settings import provider_env

    def build():
        return settings_from_environment(
            provider_env(GMAIL_BATCH_SIZE=value), sandbox_allowed=True, providers=[Gmail]
        )

    if valid:
        assert build()["GMAIL_BATCH_SIZE"] == int(value)
    else:
        with pytest.raises(ImproperlyConfigured, match="GMAIL_BATCH_SIZE is not a valid value"):
            build()


@pytest.mark.django_db(transaction=True)
def test_everything_gmail_has_is_the_whole_mailbox(gmail_connection):
    """The longest history window a person may choose: no date bound on the listing."""
    from sources.providers.base import BACKFILL_EVERYTHING
    from sources.providers.gmail.sandbox import mailbox_size_set

    connection = gmail_connection
    mailbox_size_set(connection.sandbox_email, 1)  # a small mailbox of the sandbox's whole span
    UserDataSource.objects.filter(pk=connection.pk).update(backfill_days=BACKFILL_EVERYTHING)
    run = sync(connection)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    everything = sandbox_ids(connection.sandbox_email, 0)
    assert len(everything) > 60  # older than any shorter window would reach
    assert stored_ids(connection) == everything
