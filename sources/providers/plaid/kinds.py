"""The record kinds only Plaid produces."""

from __future__ import annotations

from datetime import datetime

from ingestion.schemas import NUMBER, Kind
from ingestion.schemas import FieldSpec as S

# A bank account's transaction.
TRANSACTION = Kind(
    "transaction",
    "external",
    {
        "transaction_id": S(str),
        "account_id": S(str),
        "date": S(str),
        "datetime": S(datetime, required=False, nullable=True),
        "amount": S(NUMBER),
        "currency": S(str, nullable=True),
        "name": S(str),
        "merchant": S(str, required=False, nullable=True),
        "category": S(list, required=False, nullable=True),
        "pending": S(bool),
        "pending_transaction_id": S(str, required=False, nullable=True),
    },
)
