"""Records written before every value was sealed: `manage.py records_seal` rewrites them with
their whole data sealed, once, resumably; and quarantine reasons never carry a personal value.
Everything is checked on the documents as stored."""

from datetime import UTC, datetime
from io import StringIO

import bson
import pytest
from django.core.management import call_command
from django.utils import timezone

from ingestion.events import events_accept
from ingestion.fence import data_key_ensure, erasure_subject
from ingestion.management.commands.records_seal import records_seal
from ingestion.models import ErasureRecord, QuarantinedItem
from ingestion.processing import items_process
from ingestion.schemas import ProcessedPage, Record
from ingestion.storage import page_store, record_decode
from sibling.encryption import data_key_alt_name, key_vault_collection, value_encrypt
from tests.factories import UserFactory
from tests.ingestion.conftest import ENVELOPE
from tests.sources.providers.kit import provider_for, quarantine_reasons

pytestmark = pytest.mark.django_db(transaction=True)
WHEN = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)


def _bank() -> str:
    """The registered provider whose records are transactions (amounts, dates, categories)."""
    return provider_for(kind="transaction").id


def _old_transaction(person, n: int) -> dict:
    """A transaction as storage wrote it before: amounts, dates and categories readable."""
    return {
        "user": person.pk,
        "provider": _bank(),
        "kind": "transaction",
        "external_id": f"t{n}",
        "connection": None,
        "occurred_at": WHEN,
        "data": {
            "transaction_id": f"t{n}",
            "date": "2026-01-05",
            "amount": 40.0 + n,
            "currency": "EUR",
            "category": ["Healthcare", "Pharmacy"],
            "pending": False,
        },
        "sealed": value_encrypt({"name": f"Pharmacy {n}", "account_id": "acc"}, owner_id=person.pk),
        "schema_version": 1,
        "ingested_at": WHEN,
        "updated_at": WHEN,
        "raw_page": None,
    }


def _old_activity_day(person) -> dict:
    """Nothing of it was sensitive before: no sealed part, and no key needed for it."""
    return {
        "user": person.pk,
        "provider": "sibling_app",
        "kind": "activity_day",
        "external_id": "2026-01-05",
        "connection": None,
        "occurred_at": WHEN,
        "data": {"date": "2026-01-05", "steps": 18342},
        "sealed": None,
        "schema_version": 1,
        "ingested_at": WHEN,
        "updated_at": WHEN,
        "raw_page": None,
    }


@pytest.fixture
def old_layout(raw_db):
    """Records of three people in the earlier layout, one already sealed, one of an erased
    person."""
    banked, walker, erased = UserFactory(), UserFactory(), UserFactory()
    data_key_ensure(banked.pk)
    data_key_ensure(erased.pk)
    external = raw_db["external_data"]
    external.insert_many([_old_transaction(banked, n) for n in range(5)])
    raw_db["behavioral_data"].insert_one(_old_activity_day(walker))
    page_store(
        connection=None,
        user_id=banked.pk,
        provider=_bank(),
        stream="transactions",
        processed=ProcessedPage(
            records=[
                Record(
                    "transaction",
                    "already",
                    WHEN,
                    {
                        "transaction_id": "already",
                        "account_id": "acc",
                        "date": "2026-01-05",
                        "amount": 3.5,
                        "currency": "EUR",
                        "name": "Bakery",
                        "pending": False,
                    },
                )
            ]
        ),
    )
    external.insert_one(_old_transaction(erased, 99))
    ErasureRecord.objects.create(
        subject=erasure_subject(erased.pk), erased_at=timezone.now(), completed=False
    )
    expected = {
        d["_id"]: record_decode(d, owner_id=d["user"])["data"]
        for name in ("external_data", "behavioral_data")
        for d in raw_db[name].find({"user": {"$in": [banked.pk, walker.pk]}})
    }
    return banked, walker, erased, expected


def _documents(raw_db, *people) -> list[dict]:
    ids = [p.pk for p in people]
    return [
        d
        for name in ("external_data", "behavioral_data")
        for d in raw_db[name].find({"user": {"$in": ids}})
    ]


def test_records_seal_leaves_only_the_envelope_readable(raw_db, old_layout):
    banked, walker, erased, expected = old_layout
    already = raw_db["external_data"].find_one({"external_id": "already"})

    out = StringIO()
    call_command("records_seal", "--batch-size", "2", stdout=out)

    assert "6 records sealed, 1 left over from erased people deleted, 0 could not" in out.getvalue()
    documents = _documents(raw_db, banked, walker)
    assert len(documents) == 7
    for document in documents:
        # The envelope alone is readable: which provider and kind, when, and how many.
        assert set(document) <= ENVELOPE | {"_id"} and document["sealed"].subtype == 6
        encoded = bson.encode(document)
        for value in (b"Pharmacy", b"Healthcare", b"EUR", b"Bakery"):
            assert value not in encoded
        # Each reads back exactly as before, under its owner's key.
        assert (
            record_decode(document, owner_id=document["user"])["data"] == expected[document["_id"]]
        )
    # The already sealed record was not touched.
    assert (
        raw_db["external_data"].find_one({"external_id": "already"})["sealed"] == already["sealed"]
    )
    # The person whose records had nothing sealed got a key for them.
    assert (
        key_vault_collection().count_documents({"keyAltNames": data_key_alt_name(walker.pk)}) == 1
    )
    # An erased person's leftovers are removed, not sealed; no key is made for them.
    assert raw_db["external_data"].count_documents({"user": erased.pk}) == 0

    # Twice is the same as once.
    before = {d["_id"]: d["sealed"] for d in _documents(raw_db, banked, walker)}
    out = StringIO()
    call_command("records_seal", stdout=out)
    assert out.getvalue().startswith("0 records sealed")
    assert {d["_id"]: d["sealed"] for d in _documents(raw_db, banked, walker)} == before


def test_records_seal_resumes_after_being_stopped(raw_db, old_layout):
    banked, walker, _erased, expected = old_layout

    class Stopped(Exception):
        pass

    def stop_after_the_first_batch(message):
        raise Stopped

    with pytest.raises(Stopped):
        records_seal(batch_size=2, log=stop_after_the_first_batch)
    still_open = [d for d in _documents(raw_db, banked, walker) if "data" in d]
    assert 0 < len(still_open) < 6  # the first batch sealed, the rest waiting

    counts = records_seal(batch_size=2)
    assert counts["sealed"] == len(still_open)  # nothing sealed twice
    for document in _documents(raw_db, banked, walker):
        assert "data" not in document
        assert (
            record_decode(document, owner_id=document["user"])["data"] == expected[document["_id"]]
        )


def test_a_rewritten_record_loses_its_old_plaintext(raw_db, old_layout):
    """A sync storing a record again writes the current layout over the earlier one."""
    banked, _walker, _erased, _expected = old_layout
    page_store(
        connection=None,
        user_id=banked.pk,
        provider=_bank(),
        stream="transactions",
        processed=ProcessedPage(
            records=[
                Record(
                    "transaction",
                    "t0",
                    WHEN,
                    {
                        "transaction_id": "t0",
                        "account_id": "acc",
                        "date": "2026-01-05",
                        "amount": 40.0,
                        "currency": "EUR",
                        "name": "Pharmacy 0",
                        "pending": False,
                    },
                )
            ]
        ),
    )
    document = raw_db["external_data"].find_one({"user": banked.pk, "external_id": "t0"})
    assert "data" not in document
    assert record_decode(document, owner_id=banked.pk)["data"]["amount"] == 40.0


# --- Quarantine reasons ------------------------------------------------------------------------

SECRET = "after my chemo session"


def test_a_missing_field_is_named(raw_db):
    page = items_process(
        ProcessedPage(), [{"other": SECRET}], lambda item: item["steps"], kind="activity_day"
    )
    assert [q.reason for q in page.quarantined] == ["activity_day: malformed item (missing steps)"]


def test_a_missing_key_that_is_no_field_name_is_not_repeated(raw_db):
    page = items_process(
        ProcessedPage(), [{}], lambda item: item[f"{SECRET} (seconds)"], kind="productivity_hour"
    )
    assert [q.reason for q in page.quarantined] == [
        "productivity_hour: malformed item (missing a key)"
    ]


def test_events_are_quarantined_without_their_values(raw_db):
    person = UserFactory()
    events_accept(
        user=person,
        events=[
            # The client's id is made of personal words; the rating is out of range.
            {
                "id": f"mood {SECRET}",
                "kind": "mood_rating",
                "occurred_at": "2026-01-05T09:30:00Z",
                "data": {"rating": 9, "note": SECRET},
            },
            # A key that cannot be stored, itself personal.
            {
                "id": "n1",
                "kind": "note",
                "occurred_at": "2026-01-05T09:30:00Z",
                "data": {"text": "x", "tags": [{f"${SECRET}": 1}]},
            },
            # A field nobody registered, named with a personal value.
            {
                "id": "n2",
                "kind": "note",
                "occurred_at": "2026-01-05T09:30:00Z",
                "data": {"text": "x", SECRET: 1},
            },
            # A kind nobody registered, named with a personal value.
            {"id": "k1", "kind": SECRET, "occurred_at": "2026-01-05T09:30:00Z", "data": {}},
        ],
    )
    reasons = quarantine_reasons(raw_db, person, SECRET)
    assert len(reasons) == 4
    assert any(r.endswith("mood_rating: rating must be between 1 and 5") for r in reasons)
    assert any("has a key that cannot be stored" in r for r in reasons)
    assert any(r.endswith("note: unexpected fields 1 other key") for r in reasons)
    assert any(r.endswith("unknown kind (not a registered kind)") for r in reasons)
    kinds = {d["kind"] for d in raw_db[QuarantinedItem._meta.db_table].find({"user_id": person.pk})}
    assert kinds == {"mood_rating", "note", ""}
