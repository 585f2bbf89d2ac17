"""Where each event comes from (a connection's changes, an events batch, an erasure), whom it
goes to (event types and categories wanted), and in-process handlers run by workers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ingestion.erasure import person_erase
from ingestion.events import PROVIDER as EVENTS_PROVIDER
from ingestion.events import events_accept
from ingestion.schemas import ProcessedPage, Record
from ingestion.storage import StoreCounts, page_store
from outbound import registry
from outbound.emit import event_emit, subscribers_forget
from outbound.models import (
    CONNECTION_CREATED,
    CONNECTION_DISCONNECTED,
    CONNECTION_REAUTH_REQUIRED,
    PERSON_ERASED,
    RECORDS_CHANGED,
    Delivery,
)
from sibling.models import Person
from sibling.people import person_of
from sources.services import connection_disconnect
from sources.signals import EXPIRING, REAUTH_REQUIRED, STOPPED, connection_changed_send
from tests.outbound.conftest import deliveries, send, subscriber_add
from tests.sources.providers.kit import sandbox_connection

State = Delivery.State


def test_a_connection_s_changes_become_events_with_ids_only(receiver, person):
    connection = sandbox_connection(person, auth_mode="api_key")
    connection_changed_send(connection, REAUTH_REQUIRED)
    connection_changed_send(connection, STOPPED)  # not an event subscribers get
    connection_changed_send(connection, EXPIRING)  # nor this one
    connection_disconnect(connection=connection, delete_data=False)
    rows = deliveries()
    assert [row.event_type for row in rows] == [
        CONNECTION_CREATED,
        CONNECTION_REAUTH_REQUIRED,
        CONNECTION_DISCONNECTED,
    ]
    public_id = person_of(person).public_id
    for row in rows:
        assert row.data == {
            "person": public_id,
            "provider": connection.provider,
            "connection": str(connection.pk),
        }
    send()
    assert [got.event_type for got in receiver.verified()] == [row.event_type for row in rows]


def test_an_erasure_ends_with_person_erased_and_leaves_no_person_row(receiver, person):
    sandbox_connection(person, auth_mode="api_key")
    public_id = person_of(person).public_id
    user_id = person.pk
    person_erase(user=person)
    rows = deliveries(person=public_id)
    assert rows[-1].event_type == PERSON_ERASED and rows[-1].data == {"person": public_id}
    assert CONNECTION_DISCONNECTED in [row.event_type for row in rows]
    assert not Person.objects.filter(user_id=user_id).exists()
    send()
    assert receiver.verified()[-1].body["data"] == {"person": public_id}


def test_a_sync_finishing_after_the_erasure_emits_nothing_and_makes_no_person_row(receiver, person):
    user_id = person.pk
    person.delete()
    counts = StoreCounts(created=1, kinds={"note"})
    from outbound.emit import records_changed_emit

    assert records_changed_emit(user_id=user_id, provider="p", counts=counts) is None
    assert not Person.objects.filter(user_id=user_id).exists()
    assert not Delivery.objects.exists()


def test_an_events_batch_emits_records_changed_for_its_categories(sandbox, person):
    behavioral, _ = subscriber_add("http://127.0.0.1:9/b", name="b", categories=["behavioral"])
    subscriber_add("http://127.0.0.1:9/e", name="e", categories=["external"])
    subscriber_add("http://127.0.0.1:9/x", name="x", event_types=[PERSON_ERASED])
    result = events_accept(
        user=person,
        events=[
            {
                "id": "m1",
                "kind": "mood_rating",
                "occurred_at": "2025-03-01T08:30:00Z",
                "data": {"rating": 4, "note": "private words"},
            },
            {
                "id": "t1",
                "kind": "screen_time",
                "occurred_at": "2025-03-02T08:30:00Z",
                "data": {"date": "2025-03-02", "app": "Reader", "seconds": 60},
            },
        ],
    )
    assert result.accepted == 2
    [row] = deliveries(event_type=RECORDS_CHANGED)
    # Only the subscriber wanting one of the batch's categories.
    assert row.subscriber_id == behavioral.pk
    assert row.data["provider"] == EVENTS_PROVIDER
    assert row.data["kinds"] == ["mood_rating", "screen_time"]
    assert row.data["counts"] == {"created": 2, "updated": 0, "deleted": 0}
    assert row.data["range"] == {
        "from": "2025-03-01T08:30:00.000Z",
        "to": "2025-03-02T08:30:00.000Z",
    }
    assert row.data["run"] is None
    assert "private words" not in str(row.data) and "Reader" not in str(row.data)


def test_store_counts_carry_the_kinds_and_the_range_written(person):
    from ingestion.fence import data_key_ensure

    data_key_ensure(person.pk)
    early = datetime(2025, 1, 1, tzinfo=UTC)
    late = datetime(2025, 1, 9, tzinfo=UTC)
    page = ProcessedPage(
        records=[
            Record(kind="note", external_id="a", occurred_at=late, data={"text": "x"}),
            Record(kind="note", external_id="b", occurred_at=early, data={"text": "y"}),
        ],
        removed=[("mood_rating", "gone")],
    )
    counts = page_store(
        connection=None, user_id=person.pk, provider="p", stream="s", processed=page
    )
    assert counts.kinds == {"note", "mood_rating"}
    assert (counts.occurred_from, counts.occurred_to) == (early, late)
    total = StoreCounts()
    total += counts
    later = datetime(2025, 2, 1, tzinfo=UTC)
    total += StoreCounts(created=1, occurred_from=late, occurred_to=later)
    assert total.occurred_from == early and total.occurred_to == later
    assert total.created == counts.created + 1


@pytest.fixture
def handler_calls():
    calls: list[dict] = []
    failing = {"times": 0}

    @registry.on(RECORDS_CHANGED, name="tests.behaviour", categories=("behavioral",))
    def behaviour(event: dict) -> None:
        if failing["times"]:
            failing["times"] -= 1
            raise RuntimeError("not now")
        calls.append(event)

    subscribers_forget()
    yield calls, failing
    registry.unsubscribe(RECORDS_CHANGED, "tests.behaviour")


def test_an_in_process_handler_runs_in_a_worker_with_the_same_retries(db, handler_calls):
    calls, failing = handler_calls
    failing["times"] = 1
    event_id = event_emit(
        event_type=RECORDS_CHANGED,
        data={"provider": "p"},
        person="p-1",
        categories=("behavioral",),
    )
    # Not called where the event happened.
    assert calls == []
    [row] = deliveries()
    assert row.target == "h:tests.behaviour" and row.handler == "tests.behaviour"
    send()
    row.refresh_from_db()
    assert row.state == State.FAILED and row.last_error == "handler raised RuntimeError"
    Delivery.objects.update(next_attempt_at=row.created_at)
    send()
    row.refresh_from_db()
    assert row.state == State.DELIVERED
    assert calls == [
        {
            "id": event_id,
            "type": RECORDS_CHANGED,
            "timestamp": calls[0]["timestamp"],
            "data": {"person": "p-1", "provider": "p"},
        }
    ]
    # Another category's records: not this handler's.
    assert (
        event_emit(event_type=RECORDS_CHANGED, data={}, person="p", categories=("external",))
        is None
    )


def test_a_handler_nobody_registers_any_more_fails_its_deliveries(db, handler_calls):
    event_emit(event_type=RECORDS_CHANGED, data={}, person="p", categories=("behavioral",))
    registry.unsubscribe(RECORDS_CHANGED, "tests.behaviour")
    send()
    [row] = deliveries()
    assert row.state == State.FAILED and "no handler registered" in row.last_error


def test_registering_an_unknown_event_type_is_refused():
    with pytest.raises(ValueError, match="unknown event type"):
        registry.subscribe("records.deleted", lambda event: None)


def test_a_settings_row_made_by_an_event_racing_the_erasure_is_swept(person):
    from ingestion.erasure import person_erase_sweep

    user_id = person.pk
    person_erase(user=person)
    # An event whose person was looked up just before the account went makes the row after.
    Person.objects.create(user_id=user_id)
    swept = person_erase_sweep(user_id)
    assert not Person.objects.filter(user_id=user_id).exists()
    assert swept[Person._meta.label] == 1
