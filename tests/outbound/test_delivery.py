"""Change notifications end to end over real HTTP: a sync's records.changed signed, delivered by
a worker and verified by the sandbox's receiver; redelivery after the endpoint was down; order
per person; deduplication by webhook-id; what an attacker's forged delivery meets."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
import requests
from django.utils import timezone
from standardwebhooks import Webhook

from outbound.delivery import BACKOFF_S, PARKED_UNTIL
from outbound.emit import event_emit, records_changed_emit
from outbound.models import CONNECTION_CREATED, PERSON_ERASED, RECORDS_CHANGED, Delivery
from outbound.signing import event_body, headers_sign, secret_generate
from sibling.people import person_of
from tests.ingestion.conftest import sync
from tests.outbound.conftest import deliveries, send
from tests.sources.providers.kit import sandbox_connection

State = Delivery.State


def _due_now(*rows: Delivery) -> None:
    """Time passes: the deliveries' next attempt has come."""
    Delivery.objects.filter(pk__in=[row.pk for row in rows]).update(next_attempt_at=timezone.now())


def test_a_sync_produces_a_signed_records_changed_that_the_receiver_verifies(receiver, person):
    connection = sandbox_connection(person, auth_mode="api_key")
    run = sync(connection)
    assert run.outcome == "success" and run.created > 0

    [owed] = deliveries(event_type=RECORDS_CHANGED)
    # Stored by the sync, not sent by it: nothing reached the receiver yet.
    assert owed.state == State.PENDING
    assert receiver.received() == []

    assert send() >= 1
    [got] = [row for row in receiver.received() if row.event_type == RECORDS_CHANGED]
    assert got.verified and got.answered == 200 and not got.duplicate
    assert got.webhook_id == owed.event_id and owed.event_id.startswith("msg_")
    body = got.body
    assert body["type"] == RECORDS_CHANGED and body["timestamp"].endswith("Z")
    data = body["data"]
    # Ids and counts only: the person's pseudonymous id, never their account id or a value.
    assert set(data) == {"person", "provider", "kinds", "counts", "range", "run", "connection"}
    assert data["person"] == person_of(person).public_id
    assert data["provider"] == connection.provider
    assert data["kinds"] and all(isinstance(kind, str) for kind in data["kinds"])
    assert data["counts"] == {"created": run.created, "updated": run.updated, "deleted": 0}
    assert data["run"] == str(run.pk) and data["connection"] == str(connection.pk)
    assert data["range"]["from"] <= data["range"]["to"]
    assert str(person.pk) not in json.dumps(body) and person.email not in json.dumps(body)
    assert Delivery.objects.get(pk=owed.pk).state == State.DELIVERED


def test_a_sync_that_changes_nothing_emits_nothing(receiver, person):
    connection = sandbox_connection(person, auth_mode="api_key")
    sync(connection)
    Delivery.objects.all().delete()
    second = sync(connection)
    assert second.created == 0 and second.deleted == 0
    # A resync that rewrites the same records reports them updated, and only then.
    rows = deliveries(event_type=RECORDS_CHANGED)
    assert len(rows) == (1 if second.updated else 0)


def test_redelivery_after_the_endpoint_was_down(receiver, person):
    receiver.down()
    event_id = event_emit(
        event_type=CONNECTION_CREATED, data={"provider": "x", "connection": "1"}, person="p-1"
    )
    assert send() == 1
    [row] = deliveries()
    assert row.state == State.FAILED and row.attempts == 1 and row.last_error == "HTTP 503"
    # Retried after the first backoff step, not at once.
    assert row.next_attempt_at - row.last_attempt_at == timedelta(seconds=BACKOFF_S[0])
    assert send() == 0

    receiver.down(False)
    _due_now(row)
    assert send() == 1
    row.refresh_from_db()
    assert row.state == State.DELIVERED and row.attempts == 2
    answers = [(got.webhook_id, got.answered, got.verified) for got in receiver.received()]
    assert answers == [(event_id, 503, False), (event_id, 200, True)]


def test_a_person_s_events_go_in_order_and_wait_for_the_one_before(receiver):
    receiver.down()
    first = event_emit(event_type=CONNECTION_CREATED, data={"n": 1}, person="person-a")
    second = event_emit(event_type=CONNECTION_CREATED, data={"n": 2}, person="person-a")
    other = event_emit(event_type=CONNECTION_CREATED, data={"n": 1}, person="person-b")
    send()
    # Each person's first event was tried; person a's second waits behind its first.
    assert {got.webhook_id for got in receiver.received()} == {first, other}
    waiting = Delivery.objects.get(event_id=second)
    assert waiting.state == State.PENDING and waiting.attempts == 0
    head = Delivery.objects.get(event_id=first)
    # Parked until its head's next attempt: not read again by each send meanwhile.
    assert waiting.next_attempt_at == head.next_attempt_at
    assert send() == 0

    receiver.down(False)
    _due_now(head, Delivery.objects.get(event_id=other))
    send()
    delivered = [got.webhook_id for got in receiver.verified()]
    assert delivered.index(first) < delivered.index(second)
    assert set(delivered) == {first, second, other}


def test_an_exhausted_delivery_lets_the_next_one_go(receiver, settings):
    receiver.down()
    first = event_emit(event_type=CONNECTION_CREATED, data={"n": 1}, person="person-a")
    second = event_emit(event_type=CONNECTION_CREATED, data={"n": 2}, person="person-a")
    # The first's 3 days are over: its next failure exhausts it.
    Delivery.objects.filter(event_id=first).update(retry_until=timezone.now())
    send()
    assert Delivery.objects.get(event_id=first).state == State.EXHAUSTED
    # The next one was tried at once, in the same round.
    assert [got.webhook_id for got in receiver.received()] == [first, second]


def test_receivers_deduplicate_by_webhook_id_and_event_ids_are_unique(receiver):
    ids = {event_emit(event_type=CONNECTION_CREATED, data={}, person=f"p{n}") for n in range(20)}
    assert len(ids) == 20
    send()
    row = Delivery.objects.first()
    # The same event sent again (a retry or replay): same webhook-id, the receiver sees a repeat.
    Delivery.objects.filter(pk=row.pk).update(state=State.PENDING, next_attempt_at=timezone.now())
    send()
    repeats = [got for got in receiver.received() if got.webhook_id == row.event_id]
    assert [got.duplicate for got in repeats] == [False, True]
    assert all(got.verified for got in repeats)


def test_the_receiver_refuses_forged_deliveries(receiver):
    """An attacker who knows the URL but not the secret: every delivery refused (401, recorded
    unverified), none counted, never a 500."""
    url = receiver.subscriber.url
    body = event_body(
        event_type=PERSON_ERASED, created_at=timezone.now(), data={"person": "victim"}
    )
    now = timezone.now()
    wrong_key = headers_sign(secret=secret_generate(), event_id="msg_forged", body=body, at=now)
    good = headers_sign(secret=receiver.secret, event_id="msg_forged", body=body, at=now)
    stale = headers_sign(
        secret=receiver.secret, event_id="msg_old", body=body, at=now - timedelta(minutes=10)
    )
    attempts = [
        wrong_key,
        {**good, "webhook-signature": "v1"},  # malformed
        {**good, "webhook-signature": "v1,not base64!"},
        {key: value for key, value in good.items() if key != "webhook-timestamp"},
        {**good, "webhook-timestamp": "soon"},
        stale,  # a captured delivery replayed later
        {**good, "webhook-id": "msg_other"},  # a signature moved to another id
    ]
    for headers in attempts:
        answer = requests.post(url, data=body, headers=headers, timeout=10)
        assert answer.status_code == 401, headers
    tampered = requests.post(url, data=body.replace("victim", "someone"), headers=good, timeout=10)
    assert tampered.status_code == 401
    rows = receiver.received()
    assert len(rows) == len(attempts) + 1
    assert not any(row.verified for row in rows)
    # The genuine signature verifies (the refusals were for the forgeries).
    assert requests.post(url, data=body, headers=good, timeout=10).status_code == 200
    assert Webhook(receiver.secret).verify(body, good)["data"] == {"person": "victim"}


def _database_calls(monkeypatch) -> list[tuple[str, str]]:
    """Every collection method called from now on, as (method, collection)."""
    from pymongo.synchronous.collection import Collection

    calls: list[tuple[str, str]] = []
    for name in (
        "insert_one",
        "insert_many",
        "update_one",
        "update_many",
        "bulk_write",
        "find",
        "find_one",
        "aggregate",
        "count_documents",
        "find_one_and_update",
    ):
        original = getattr(Collection, name)

        def recorded(self, *args, _original=original, _name=name, **kwargs):
            calls.append((_name, self.name))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(Collection, name, recorded)
    return calls


def test_emission_is_one_insert_and_nothing_when_nobody_wants_it(receiver, person, monkeypatch):
    from ingestion.storage import StoreCounts

    counts = StoreCounts(created=2, kinds={"transaction"})
    counts.occurred_span(timezone.now())
    person_of(person)
    event_emit(event_type=PERSON_ERASED, data={}, person="p")  # the subscriber list, as cached
    calls = _database_calls(monkeypatch)
    assert records_changed_emit(user_id=person.pk, provider="p", counts=counts)
    writes = [call for call in calls if not call[0].startswith(("find", "aggregate", "count"))]
    # One insert (every subscriber's row at once), after one read of the person's public id.
    assert writes == [("insert_many", Delivery._meta.db_table)], calls
    assert len(calls) == 2, calls

    # Nobody wants person.erased any more: not a single database call.
    receiver.subscriber.event_types = [RECORDS_CHANGED]
    receiver.subscriber.save()
    event_emit(event_type=PERSON_ERASED, data={}, person="p")  # refreshes the subscriber list
    calls.clear()
    assert event_emit(event_type=PERSON_ERASED, data={}, person="p") is None
    assert calls == []


def test_a_paused_subscriber_s_deliveries_wait_and_go_on_resume(receiver):
    from outbound.delivery import subscriber_pause, subscriber_resume

    subscriber_pause(receiver.subscriber, reason="maintenance")
    event_id = event_emit(event_type=CONNECTION_CREATED, data={}, person="p")
    assert send() == 0
    assert Delivery.objects.get(event_id=event_id).next_attempt_at == PARKED_UNTIL
    assert subscriber_resume(receiver.subscriber) == 1
    time.sleep(0.01)
    assert send() == 1
    assert [got.webhook_id for got in receiver.verified()] == [event_id]


def test_a_redirect_is_a_failure_and_is_not_followed(receiver):
    receiver.down(status=307)
    event_emit(event_type=CONNECTION_CREATED, data={}, person="p")
    send()
    [row] = deliveries()
    assert row.state == State.FAILED and row.last_error == "HTTP 307"
    assert len(receiver.received()) == 1


def test_one_delivery_per_event_and_subscriber(receiver):
    from django.db import IntegrityError

    event_emit(event_type=CONNECTION_CREATED, data={}, person="p")
    [row] = deliveries()
    row.pk = None
    with pytest.raises(IntegrityError):
        row.save()


def test_a_killed_worker_s_lapsed_claim_is_taken_over_by_one_worker_only(receiver):
    from outbound.delivery import delivery_claim

    event = event_emit(event_type=CONNECTION_CREATED, data={}, person="person-a")
    # A worker claimed it and was killed: the row says "sending" with a claim that has lapsed.
    lapsed = timezone.now() - timedelta(minutes=1)
    Delivery.objects.filter(event_id=event).update(
        state=State.SENDING, claimed_until=lapsed, next_attempt_at=lapsed
    )
    # Two workers read the row alike; one claims it, the other finds it taken.
    first_read = Delivery.objects.get(event_id=event)
    second_read = Delivery.objects.get(event_id=event)
    now = timezone.now()
    assert [delivery_claim(first_read, now), delivery_claim(second_read, now)] == [True, False]

    # A worker's round takes over a lapsed claim and sends the delivery once.
    Delivery.objects.filter(event_id=event).update(claimed_until=lapsed, next_attempt_at=lapsed)
    assert send() == 1
    assert Delivery.objects.get(event_id=event).state == State.DELIVERED
    assert [got.webhook_id for got in receiver.verified()] == [event]
