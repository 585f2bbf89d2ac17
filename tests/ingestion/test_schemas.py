"""The schema registry: a new category of records arrives without touching the pipeline."""

from datetime import UTC, datetime

import bson
import pytest

from ingestion.fence import data_key_ensure
from ingestion.schemas import (
    _KINDS,
    CATEGORY_COLLECTIONS,
    FieldSpec,
    InvalidItem,
    Kind,
    ProcessedPage,
    Record,
    category_register,
    kind_register,
    record_validate,
)
from ingestion.storage import page_store, record_decode
from sibling.mongo import plain_database
from tests.factories import UserFactory


@pytest.fixture
def inferred():
    category_register("inferred", "inferred_data")
    kind = kind_register(
        Kind(
            "sleep_debt_estimate",
            "inferred",
            {"hours": FieldSpec(float), "explanation": FieldSpec(str)},
        )
    )
    yield kind
    _KINDS.pop(kind.name)
    CATEGORY_COLLECTIONS.pop("inferred")


@pytest.mark.django_db
def test_a_new_category_and_kind_are_stored_by_the_same_storage(inferred):
    person = UserFactory()
    data_key_ensure(person.pk)
    record = record_validate(
        Record(
            kind="sleep_debt_estimate",
            external_id="2026-11-20",
            occurred_at=datetime(2026, 11, 20, tzinfo=UTC),
            data={"hours": 3.5, "explanation": "three short nights"},
        )
    )
    counts = page_store(
        connection=None,
        user_id=person.pk,
        provider="sibling_models",
        stream="estimates",
        processed=ProcessedPage(records=[record]),
    )
    assert counts.created == 1
    stored = plain_database()["inferred_data"].find_one({"user": person.pk})
    # Every value is sealed; the envelope alone is readable.
    assert "data" not in stored and stored["sealed"].subtype == 6
    assert b"three short nights" not in bson.encode(stored)
    assert record_decode(stored, owner_id=person.pk)["data"] == {
        "hours": 3.5,
        "explanation": "three short nights",
    }


def test_records_are_checked_against_their_kind():
    with pytest.raises(InvalidItem, match="missing amount"):
        record_validate(
            Record(
                "transaction",
                "t1",
                datetime(2026, 1, 1, tzinfo=UTC),
                {
                    "transaction_id": "t1",
                    "account_id": "a",
                    "date": "2026-01-01",
                    "currency": "USD",
                    "name": "Coffee",
                    "pending": False,
                },
            )
        )
    with pytest.raises(InvalidItem, match="unexpected fields"):
        record_validate(
            Record(
                "productivity_day",
                "d",
                datetime(2026, 1, 1, tzinfo=UTC),
                {"date": "2026-01-01", "total_hours": 1.0, "surprise": 1},
            )
        )
