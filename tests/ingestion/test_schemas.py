"""The schema registry: a new category of records arrives without touching the pipeline."""

from datetime import UTC, datetime

import pytest

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
from ingestion.storage import page_store
from sibling.mongo import plain_database
from tests.factories import UserFactory


@pytest.fixture
def inferred():
    category_register("inferred", "inferred_data")
    kind = kind_register(
        Kind(
            "sleep_debt_estimate",
            "inferred",
            {"hours": FieldSpec(float), "explanation": FieldSpec(str, sensitive=True)},
        )
    )
    yield kind
    _KINDS.pop(kind.name)
    CATEGORY_COLLECTIONS.pop("inferred")


@pytest.mark.django_db
def test_a_new_category_and_kind_are_stored_by_the_same_storage(inferred):
    person = UserFactory()
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
    assert stored["data"] == {"hours": 3.5} and stored["sealed"].subtype == 6


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
