"""Storing a page: its records sealed and written in chunks that overlap the sealing of the next,
every record stored once, and nothing still being written once page_store has returned or raised.
"""

import threading
from datetime import UTC, datetime

import pytest
from pymongo.errors import BulkWriteError

from ingestion import storage
from ingestion.fence import data_key_ensure
from ingestion.schemas import (
    _KINDS,
    CATEGORY_COLLECTIONS,
    FieldSpec,
    Kind,
    ProcessedPage,
    Record,
    category_register,
    kind_register,
)
from ingestion.storage import WRITE_CHUNK, page_store, record_decode
from sibling.encryption import EncryptionFailure
from sibling.mongo import plain_database
from tests.factories import UserFactory

FIRST, SECOND = "chunk_first_data", "chunk_second_data"


@pytest.fixture
def kinds():
    """Two kinds, each in a category (and collection) of its own."""
    registered = []
    for category, collection in (("chunk_first", FIRST), ("chunk_second", SECOND)):
        category_register(category, collection)
        registered.append(kind_register(Kind(f"{category}_note", category, {"n": FieldSpec(int)})))
    yield [kind.name for kind in registered]
    for kind in registered:
        _KINDS.pop(kind.name)
        CATEGORY_COLLECTIONS.pop(kind.category)


@pytest.fixture
def person():
    person = UserFactory()
    data_key_ensure(person.pk)
    return person


def _records(kind: str, count: int, start: int = 0) -> list[Record]:
    return [
        Record(kind, f"r{n}", datetime(2026, 11, 1, tzinfo=UTC), {"n": n})
        for n in range(start, start + count)
    ]


def _store(person, processed: ProcessedPage) -> storage.StoreCounts:
    return page_store(
        connection=None, user_id=person.pk, provider="chunks", stream="notes", processed=processed
    )


def _stored(collection: str, person) -> list[dict]:
    return list(plain_database()[collection].find({"user": person.pk}))


@pytest.mark.django_db
def test_a_page_of_many_chunks_in_two_collections_is_stored_once(kinds, person):
    first, second = kinds
    size = 2 * WRITE_CHUNK + 7
    page = ProcessedPage(records=_records(first, size) + _records(second, WRITE_CHUNK + 1))

    counts = _store(person, page)
    assert (counts.created, counts.updated) == (size + WRITE_CHUNK + 1, 0)
    stored = _stored(FIRST, person)
    assert len(stored) == size
    assert len(_stored(SECOND, person)) == WRITE_CHUNK + 1
    decoded = {record_decode(d, owner_id=person.pk)["data"]["n"] for d in stored}
    assert decoded == set(range(size))

    # The same page again changes nothing but updated_at; the removed ones go, in either
    # collection, after the records written before them in the same page.
    again = ProcessedPage(
        records=_records(first, size),
        removed=[(first, f"r{n}") for n in range(WRITE_CHUNK + 3)] + [(second, "r0")],
    )
    counts = _store(person, again)
    assert (counts.created, counts.updated, counts.deleted) == (0, size, WRITE_CHUNK + 4)
    assert len(_stored(FIRST, person)) == size - WRITE_CHUNK - 3
    assert len(_stored(SECOND, person)) == WRITE_CHUNK


@pytest.mark.django_db
def test_the_next_chunk_is_sealed_while_the_chunk_before_is_written(kinds, person, monkeypatch):
    """The first chunk's write waits until a record of the second chunk has been sealed: with
    sealing and writing one after the other, that record would never be sealed in time."""
    sealed = 0
    second_chunk_sealing = threading.Event()
    write_threads = []
    encrypt, bulk_write = storage.value_encrypt, storage._bulk_write

    def counting_encrypt(value, **kwargs):
        nonlocal sealed
        sealed += 1
        if sealed > WRITE_CHUNK:
            second_chunk_sealing.set()
        return encrypt(value, **kwargs)

    def waiting_write(collection, operations):
        write_threads.append(threading.current_thread())
        overlapped = second_chunk_sealing.wait(timeout=30)
        assert overlapped, "the second chunk was not sealed while the first was written"
        return bulk_write(collection, operations)

    monkeypatch.setattr(storage, "value_encrypt", counting_encrypt)
    monkeypatch.setattr(storage, "_bulk_write", waiting_write)
    counts = _store(person, ProcessedPage(records=_records(kinds[0], 3 * WRITE_CHUNK)))

    assert counts.created == 3 * WRITE_CHUNK
    assert len(write_threads) == 3
    assert threading.current_thread() not in write_threads


@pytest.mark.django_db
def test_a_page_of_one_chunk_is_written_in_the_callers_thread(kinds, person, monkeypatch):
    threads = []
    bulk_write = storage._bulk_write

    def recording_write(collection, operations):
        threads.append(threading.current_thread())
        return bulk_write(collection, operations)

    monkeypatch.setattr(storage, "_bulk_write", recording_write)
    assert _store(person, ProcessedPage(records=_records(kinds[0], WRITE_CHUNK))).created == (
        WRITE_CHUNK
    )
    assert threads == [threading.current_thread()]


@pytest.mark.django_db
def test_a_failure_while_sealing_raises_once_the_chunks_sent_are_written(
    kinds, person, monkeypatch
):
    sealed = 0
    encrypt, bulk_write = storage.value_encrypt, storage._bulk_write
    first_chunk_written = threading.Event()

    def failing_encrypt(value, **kwargs):
        nonlocal sealed
        sealed += 1
        if sealed == WRITE_CHUNK + 10:
            raise EncryptionFailure("sealing failed")
        return encrypt(value, **kwargs)

    def slow_write(collection, operations):
        # Still writing when the caller fails: page_store must wait for it before raising.
        result = bulk_write(collection, operations)
        first_chunk_written.set()
        return result

    monkeypatch.setattr(storage, "value_encrypt", failing_encrypt)
    monkeypatch.setattr(storage, "_bulk_write", slow_write)
    with pytest.raises(EncryptionFailure):
        _store(person, ProcessedPage(records=_records(kinds[0], 3 * WRITE_CHUNK)))

    assert first_chunk_written.is_set()
    assert len(_stored(FIRST, person)) == WRITE_CHUNK
    assert not [t for t in threading.enumerate() if t.name.startswith("page-store")]


@pytest.mark.django_db
def test_a_failed_chunk_is_raised_and_nothing_more_is_sent(kinds, person, monkeypatch):
    sent = []
    bulk_write = storage._bulk_write

    def failing_write(collection, operations):
        sent.append(len(operations))
        if len(sent) == 1:
            raise BulkWriteError({"writeErrors": [{"index": 0, "code": 2, "errmsg": "refused"}]})
        return bulk_write(collection, operations)

    monkeypatch.setattr(storage, "_bulk_write", failing_write)
    with pytest.raises(BulkWriteError):
        _store(person, ProcessedPage(records=_records(kinds[0], 5 * WRITE_CHUNK)))
    # The chunks sent before the failure was seen are written; none after it.
    assert len(sent) < 5
    assert len(_stored(FIRST, person)) == WRITE_CHUNK * (len(sent) - 1)
