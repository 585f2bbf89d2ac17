"""Strava's push subscription: the validation request, and events taken as hints only when they
name Sibling's subscription (Strava signs nothing). End to end through the sandbox, which
subscribes (validating the callback) and pushes the events as Strava does."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from ingestion.models import RawPage, WebhookEvent, WebhookRejection
from ingestion.storage import record_decode
from sources.models import PendingRevocation, UserDataSource
from sources.providers.strava.provider import Strava
from sources.providers.strava.sandbox import activities_of, subscription_of
from sources.sandbox.webhooks import deliver
from tests.factories import UserFactory
from tests.ingestion.conftest import fresh, stored, sync
from tests.sources.providers.kit import fixture
from tests.sources.providers.strava.conftest import strava_connect

pytestmark = pytest.mark.django_db(transaction=True)
Status = UserDataSource.Status
URL = "/webhooks/strava/"


def post(client, body):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(URL, data=data, content_type="application/json")


def rejections(reason: str) -> int:
    return sum(r.count for r in WebhookRejection.objects.filter(provider="strava", reason=reason))


@pytest.fixture
def pushing(sandbox, settings):
    """The sandbox pushes to this test's live server."""
    settings.SIBLING_PUBLIC_URL = sandbox.url
    return sandbox


def control(client, action: str, **fields) -> dict:
    answer = client.post(
        "/sandbox/_webhooks",
        data=json.dumps({"provider": "strava", "action": action, **fields}),
        content_type="application/json",
    )
    assert answer.status_code == 200, answer.content
    return answer.json()


# --- The validation request ----------------------------------------------------------------------


def test_the_validation_request_is_answered_with_its_challenge(client, settings):
    query = fixture("strava", "webhook__subscription_validation")
    settings.STRAVA_WEBHOOK_VERIFY_TOKEN = query["hub.verify_token"]
    answer = client.get(URL, query)
    assert answer.status_code == 200
    assert answer["Content-Type"] == "application/json"
    assert answer.json() == {"hub.challenge": query["hub.challenge"]}


@pytest.mark.parametrize(
    "change",
    [
        {"hub.verify_token": "guessed"},
        {"hub.verify_token": ""},
        {"hub.mode": "unsubscribe"},
        {"hub.challenge": ""},
        {"hub.challenge": "x" * 256},
    ],
    ids=["wrong-token", "no-token", "wrong-mode", "no-challenge", "long-challenge"],
)
def test_a_validation_request_without_the_verify_token_is_refused(client, settings, change):
    query = fixture("strava", "webhook__subscription_validation")
    settings.STRAVA_WEBHOOK_VERIFY_TOKEN = query["hub.verify_token"]
    answer = client.get(URL, {**query, **change})
    assert answer.status_code == 403
    assert query["hub.challenge"] not in answer.content.decode()
    assert rejections("subscription validation refused") == 1


def test_no_verify_token_configured_validates_nothing(client, settings):
    settings.STRAVA_WEBHOOK_VERIFY_TOKEN = ""
    query = {**fixture("strava", "webhook__subscription_validation"), "hub.verify_token": ""}
    assert client.get(URL, query).status_code == 403


def test_the_sandbox_subscription_validates_the_callback(client, pushing, settings):
    answer = control(client, "subscribe")
    assert answer["subscription_id"] == int(settings.STRAVA_WEBHOOK_SUBSCRIPTION_ID)
    assert subscription_of(Strava.credentials["client_id"]) is not None


def test_the_sandbox_refuses_a_subscription_whose_callback_does_not_echo(client, pushing):
    answer = client.post(
        "/sandbox/_webhooks",
        data=json.dumps({"provider": "strava", "action": "subscribe", "verify_token": "other"}),
        content_type="application/json",
    )
    assert answer.status_code == 400
    assert "does not return 200" in answer.json()["error"]
    assert subscription_of(Strava.credentials["client_id"]) is None


# --- Events: refused unless they name the subscription ------------------------------------------


@pytest.mark.parametrize("subscription_id", [999, "999", None, True, 0.5, [120475]])
def test_an_event_naming_another_subscription_is_refused_and_counted(client, subscription_id):
    body = {**fixture("strava", "webhook__activity_create"), "subscription_id": subscription_id}
    answer = post(client, body)
    assert answer.status_code == 401
    assert not WebhookEvent.objects.exists()
    assert rejections("missing or unknown subscription") == 1


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"",
        b"[]",
        b"null",
        b"{}",
        b'{"subscription_id": 120475}',
        b'{"subscription_id": 120475, "object_type": "activity", "aspect_type": "create"}',
        b'{"subscription_id": 120475, "object_type": "activity", "aspect_type": "create", '
        b'"object_id": "x", "owner_id": 1}',
        b'{"subscription_id": 120475, "object_type": ["a"], "aspect_type": {}, '
        b'"object_id": 1, "owner_id": 1}',
        b'{"subscription_id": 120475, "object_type": "activity", "aspect_type": "delete", '
        b'"object_id": 1, "owner_id": true}',
        b'{"subscription_id": 120475, "object_type": "athlete", "aspect_type": "update", '
        b'"object_id": 1, "owner_id": 1, "updates": "authorized=false"}',
        b'{"subscription_id": 120475, "object_type": "activity", "aspect_type": "create", '
        b'"object_id": 99999999999999999999999, "owner_id": 1}',
        '{"subscription_id": 120475, "object_type": "\ud800"}'.encode("utf-8", "surrogatepass"),
        b'{"subscription_id": 120475' + b" " * 1_000_001 + b"}",
    ],
)
def test_an_attackers_junk_never_gets_a_500_nor_an_effect(client, body):
    answer = post(client, body)
    assert 400 <= answer.status_code < 500, answer.content
    assert not WebhookEvent.objects.exists()


def test_an_event_of_a_type_strava_adds_later_is_stored_and_answered_200(client):
    body = {**fixture("strava", "webhook__activity_create"), "object_type": "route"}
    assert post(client, body).status_code == 200
    event = WebhookEvent.objects.get(provider="strava")
    assert event.event_type == "route.create"
    # Nobody connected athlete 134815: nothing happens, and the sender learns nothing.
    assert event.status == WebhookEvent.Status.PROCESSED


def test_an_event_for_an_athlete_nobody_connected_changes_nothing(client):
    assert post(client, fixture("strava", "webhook__activity_create")).status_code == 200
    event = WebhookEvent.objects.get(provider="strava")
    assert event.error == "no connection for this account"


# --- Events end to end: the sandbox pushes, the receiver takes them as hints --------------------


def test_a_created_activity_starts_a_sync_that_reads_it_from_the_api(client, pushing, connection):
    assert sync(connection).outcome == "success"
    before = len(stored(connection, "behavioral_data"))
    answer = control(client, "activity_create", athlete=connection.sandbox_account, duplicate=True)
    # Validated, then the event; its redelivery is answered 200 without a second effect.
    assert answer["statuses"] == [200, 200]
    ids = {r["external_id"] for r in stored(connection, "behavioral_data")}
    assert str(answer["activity_id"]) in ids and len(ids) == before + 1
    event = WebhookEvent.objects.get(provider="strava")
    assert event.event_type == "activity.create" and event.deliveries == 2
    assert event.connection_id == connection.pk and event.user_id == connection.user_id
    assert fresh(connection).last_success_at is not None


def test_an_updated_activity_is_read_again(client, pushing, connection):
    sync(connection)
    activity = activities_of(connection.sandbox_account, after=None, before=None)[-1]
    control(
        client,
        "activity_update",
        athlete=connection.sandbox_account,
        activity_id=activity["id"],
        title="Messy",
    )
    (record,) = [
        r for r in stored(connection, "behavioral_data") if r["external_id"] == str(activity["id"])
    ]
    assert record_decode(record, owner_id=connection.user_id)["data"]["name"] == "Messy"


def test_a_deleted_activity_loses_its_record(client, pushing, connection):
    sync(connection)
    records = stored(connection, "behavioral_data")
    gone = records[0]["external_id"]
    answer = control(
        client, "activity_delete", athlete=connection.sandbox_account, activity_id=int(gone)
    )
    assert answer["statuses"][-1] == 200
    left = {r["external_id"] for r in stored(connection, "behavioral_data")}
    assert gone not in left and len(left) == len(records) - 1
    assert fresh(connection).records_stored == len(records) - 1


def test_a_deauthorization_disconnects_without_revoking_and_deletes_the_data(
    client, pushing, connection, raw_db
):
    sync(connection)
    raw_pages = raw_db[RawPage._meta.db_table]
    assert stored(connection, "behavioral_data")
    assert raw_pages.count_documents({"connection_id": connection.pk})
    # Another person's records from the same provider are none of this deauthorization's.
    other = strava_connect(UserFactory())
    sync(other)
    others = len(stored(other, "behavioral_data"))
    answer = control(client, "deauthorize", athlete=connection.sandbox_account)
    assert answer["statuses"][-1] == 200
    connection = fresh(connection)
    assert connection.status == Status.DISCONNECTED and connection.credentials is None
    assert "removed Sibling's access" in connection.notice
    assert "deleted the activities" in connection.notice
    assert not PendingRevocation.objects.exists()  # nothing left to revoke
    # Strava's API agreement: the athlete's data goes on revocation. As stored, nothing of
    # this connection is left: no record, no raw page.
    owner = {"user": connection.user_id, "connection": connection.pk}
    assert raw_db["behavioral_data"].count_documents(owner) == 0
    assert raw_pages.count_documents({"connection_id": connection.pk}) == 0
    assert connection.records_stored == 0
    # With the data gone, so are the cursors: connecting again backfills, not just the gap.
    assert connection.cursors == {} and connection.backfill_progress == 0.0
    assert len(stored(other, "behavioral_data")) == others > 0
    event = WebhookEvent.objects.get(provider="strava")
    assert event.event_type == "athlete.update" and event.status == WebhookEvent.Status.PROCESSED
    # Later events of the athlete concern nobody.
    owner = int(connection.external_account_id)
    later = {**fixture("strava", "webhook__activity_create"), "owner_id": owner}
    again = deliver(
        f"{pushing.url}{reverse('webhook_strava')}",
        json.dumps(later).encode(),
        {"Content-Type": "application/json"},
    )
    assert again == [200]
    latest = WebhookEvent.objects.filter(event_type="activity.create").get()
    assert latest.error == "no connection for this account"


def test_a_forged_deauthorization_deletes_nothing_while_strava_honours_the_grant(
    client, connection
):
    # Strava signs nothing: an attacker who knows the subscription id and an athlete id posts
    # the documented deauthorization. Strava still takes the grant, so nothing happens.
    sync(connection)
    count = len(stored(connection, "behavioral_data"))
    owner = int(connection.external_account_id)
    body = {**fixture("strava", "webhook__athlete_deauthorize"), "owner_id": owner}
    assert post(client, {**body, "object_id": owner}).status_code == 200
    event = WebhookEvent.objects.get(provider="strava")
    assert event.status == WebhookEvent.Status.PROCESSED and "still honours" in event.error
    after = fresh(connection)
    assert after.status == Status.ACTIVE and not after.notice
    assert len(stored(connection, "behavioral_data")) == count == after.records_stored
    # The refresh that asked Strava rotated the token, saved: the next sync still works.
    assert after.credentials["refresh_token"] != connection.credentials["refresh_token"]
    assert sync(after).outcome == "success"


def test_numbers_too_large_for_the_database_are_dropped_not_a_503(client):
    # Found by the junk test above: an id past int64 once reached the database and failed.
    body = {
        **fixture("strava", "webhook__athlete_deauthorize"),
        "event_time": 10**30,
        "updates": {"authorized": 10**30},
    }
    assert post(client, body).status_code == 200
    event = WebhookEvent.objects.get(provider="strava")
    assert event.payload["event_time"] is None and event.payload["authorized"] is None


def test_the_new_activity_fault_pushes_its_create_event(pushing, connection):
    from sources.sandbox.faults import fault_set

    sync(connection)
    before = {r["external_id"] for r in stored(connection, "behavioral_data")}
    fault_set("strava", connection.sandbox_account, "new_activity", count=2)
    after = {r["external_id"] for r in stored(connection, "behavioral_data")}
    assert len(after - before) == 2
    assert WebhookEvent.objects.filter(event_type="activity.create").count() == 2


def test_push_subscriptions_over_http_as_strava_documents(pushing, settings):
    import requests

    endpoint = f"{Strava.url('api')}/push_subscriptions"
    client = Strava.client_credentials()
    callback = f"{pushing.url}{URL}"
    wrong = requests.post(
        endpoint, data={**client, "callback_url": callback, "verify_token": "x"}, timeout=30
    )
    assert wrong.status_code == 400 and wrong.json()["errors"][0]["resource"] == "PushSubscription"
    made = requests.post(
        endpoint,
        data={
            **client,
            "callback_url": callback,
            "verify_token": settings.STRAVA_WEBHOOK_VERIFY_TOKEN,
        },
        timeout=30,
    )
    assert made.status_code == 201 and made.json() == {"id": 120475}
    # One subscription per application.
    again = requests.post(
        endpoint,
        data={**client, "callback_url": callback, "verify_token": "x"},
        timeout=30,
    )
    assert again.status_code == 400
    listed = requests.get(endpoint, params=client, timeout=30).json()
    assert [s["callback_url"] for s in listed] == [callback]
    stranger = requests.get(endpoint, params={**client, "client_secret": "guessed"}, timeout=30)
    assert stranger.status_code == 401
    gone = requests.delete(f"{endpoint}/120475", params=client, timeout=30)
    assert gone.status_code == 204
    assert requests.get(endpoint, params=client, timeout=30).json() == []
