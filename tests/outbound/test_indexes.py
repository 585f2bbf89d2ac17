"""The worker's reads and writes of deliveries go through indexes, on the embedded server too
(README "Queries the embedded server cannot index"): their cost follows what is due, not the
number of deliveries kept (delivered rows stay for days)."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from outbound.delivery import DUE_STATES, due_filter
from outbound.emit import event_emit
from outbound.models import CONNECTION_CREATED, Delivery, Subscriber
from tests.outbound.conftest import send

pytestmark = pytest.mark.django_db


def _plan(raw_db, query: dict, sort: list | None = None) -> str:
    cursor = raw_db[Delivery._meta.db_table].find(query)
    if sort:
        cursor = cursor.sort(sort)
    return json.dumps(cursor.explain()["queryPlanner"]["winningPlan"], default=str)


def test_the_due_reads_use_the_due_index(raw_db):
    now = timezone.now()
    for state in DUE_STATES:
        plan = _plan(raw_db, due_filter(state, now), [("next_attempt_at", 1)])
        assert "COLLSCAN" not in plan and "outbound_delivery_due" in plan, (state, plan)


def test_a_person_s_queue_is_read_and_parked_through_the_order_index(raw_db, receiver):
    target = f"s:{receiver.subscriber.pk}"
    receiver.down()
    for n in range(2):
        event_emit(event_type=CONNECTION_CREATED, data={"n": n}, person="person-a")
    with CaptureQueriesContext(connection) as queries:
        send()  # the first fails: the second is parked behind it
        # Paused meanwhile: a new event's queue is parked by the next send.
        Subscriber.objects.filter(pk=receiver.subscriber.pk).update(active=False)
        event_emit(event_type=CONNECTION_CREATED, data={}, person="person-b")
        send()
    sent = [query["sql"] for query in queries.captured_queries]
    # Every filter on deliveries the ORM sent is flat (no nested $and around a range).
    on_deliveries = [sql for sql in sent if "outbound_delivery." in sql]
    assert on_deliveries and not [sql for sql in on_deliveries if "'$and'" in sql]

    open_states = {"$in": ["pending", "failed", "sending"]}
    waiting = {"$in": ["pending", "failed"]}
    parked = Delivery.objects.get(person="person-b")
    assert parked.next_attempt_at.year == 3000 and parked.attempts == 0
    for query in (
        {"target": target, "person": "person-a", "state": open_states},  # the head
        {"target": target, "person": "person-a", "state": "pending"},  # parked behind it
        {"target": target, "person": "person-b", "state": waiting},  # a paused one's queue
    ):
        plan = _plan(raw_db, query)
        assert "COLLSCAN" not in plan and "outbound_delivery_order" in plan, (query, plan)


def test_a_send_with_nothing_due_reads_no_subscriber(receiver):
    with CaptureQueriesContext(connection) as queries:
        assert send() == 0
    assert not [q for q in queries.captured_queries if "outbound_subscriber" in q["sql"]]
