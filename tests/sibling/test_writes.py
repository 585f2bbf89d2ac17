"""Coalesced inserts store what the ORM stores, one acknowledged outcome per caller."""

from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import DatabaseError, IntegrityError
from django.utils import timezone
from pymongo import MongoClient

from ingestion.fence import data_key_ensure
from ingestion.models import WebhookEvent
from sibling import writes
from sibling.embedded import free_port
from sibling.encryption import value_decrypt
from tests.factories import UserFactory
from tests.sources.providers.kit import provider_with
from tests.testapp.models import Vault

pytestmark = pytest.mark.django_db(transaction=True)


def _event(key: str) -> WebhookEvent:
    return WebhookEvent(
        provider=provider_with(webhooks=True).id,
        dedup_key=key,
        event_type="TRANSACTIONS.SYNC_UPDATES_AVAILABLE",
        received_at=timezone.now(),
        verified=True,
        status=WebhookEvent.Status.ACCEPTED,
        payload={"item_id": "item-1", "key": key},
    )


def test_the_document_is_the_one_the_orm_inserts(raw_db):
    person = UserFactory()
    data_key_ensure(person.pk)  # as connecting an account does
    by_orm = Vault.objects.create(user=person, label="a", secret={"t": "s3cret"}, handle="h-1")
    coalesced = Vault(user=person, label="a", secret={"t": "s3cret"}, handle="h-1")
    writes.model_insert(coalesced)

    table = raw_db[Vault._meta.db_table]
    orm_doc, our_doc = table.find_one({"_id": by_orm.pk}), table.find_one({"_id": coalesced.pk})
    assert set(orm_doc) == set(our_doc)
    # Random encryption differs byte for byte; both decrypt to the same value.
    assert value_decrypt(orm_doc.pop("secret"), owner_id=person.pk) == {"t": "s3cret"}
    assert value_decrypt(our_doc.pop("secret"), owner_id=person.pk) == {"t": "s3cret"}
    assert orm_doc.pop("_id") != our_doc.pop("_id")
    assert orm_doc == our_doc  # deterministic ciphertext, the owner, the label: identical
    assert Vault.objects.get(pk=coalesced.pk).secret == {"t": "s3cret"}
    assert not coalesced._state.adding


def test_a_duplicate_key_raises_integrity_error_like_save():
    writes.model_insert(_event("same"))
    with pytest.raises(IntegrityError):
        writes.model_insert(_event("same"))
    assert WebhookEvent.objects.filter(dedup_key="same").count() == 1


def test_concurrent_callers_share_writes_and_each_learns_its_own_outcome(monkeypatch):
    batches = []
    write = writes._Inserter._write

    def counted(self, batch):
        batches.append(len(batch))
        write(self, batch)

    monkeypatch.setattr(writes._Inserter, "_write", counted)
    keys = [f"k{n}" for n in range(300)] + [f"k{n}" for n in range(0, 300, 10)]  # 30 resent

    def insert(key):
        try:
            writes.model_insert(_event(key))
            return "stored"
        except IntegrityError:
            return "duplicate"

    with ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(insert, keys))

    assert outcomes.count("stored") == 300 and outcomes.count("duplicate") == 30
    assert WebhookEvent.objects.count() == 300
    assert sum(batches) == len(keys)
    assert len(batches) < len(keys)  # writes were shared
    assert max(batches) <= writes.MAX_BATCH


def test_a_failed_write_fails_each_caller_of_its_batch_and_nobody_hangs(monkeypatch):
    unreachable = MongoClient(f"mongodb://127.0.0.1:{free_port()}", serverSelectionTimeoutMS=300)
    monkeypatch.setattr(writes.mongo, "plain_database", lambda: unreachable["sibling"])
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(writes.model_insert, _event(f"f{n}")) for n in range(16)]
        errors = [future.exception(timeout=30) for future in futures]
    assert all(isinstance(error, DatabaseError) for error in errors), errors
    assert all("item-1" not in str(error) for error in errors)  # nothing of the payload

    monkeypatch.undo()
    writes.model_insert(_event("after"))  # the inserter is usable again
    assert WebhookEvent.objects.filter(dedup_key="after").exists()
    assert not WebhookEvent.objects.filter(dedup_key__startswith="f").exists()


def test_a_refusal_other_than_a_duplicate_is_a_database_error_not_integrity_error(raw_db):
    """Callers read IntegrityError as "already stored"; a document the server refuses for any
    other reason must not look like that."""
    raw_db.create_collection("scratch_validated", validator={"$jsonSchema": {"required": ["x"]}})
    inserter = writes._Inserter("scratch_validated")
    try:
        inserter.insert({"x": 1})
        with pytest.raises(DatabaseError) as refused:
            inserter.insert({"y": 2})
        assert not isinstance(refused.value, IntegrityError)
        assert raw_db["scratch_validated"].count_documents({}) == 1
    finally:
        raw_db.drop_collection("scratch_validated")
