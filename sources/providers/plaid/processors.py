"""Plaid /transactions/sync pages -> transaction records (pure)."""

from __future__ import annotations

from typing import Any

from ingestion.processing import date_start, items_process, parse_datetime, require
from ingestion.schemas import InvalidItem, ProcessedPage, Record

KIND = "transaction"


def transaction_record(item: dict[str, Any]) -> Record:
    amount = require(item, "amount", KIND)
    if isinstance(amount, bool) or not isinstance(amount, (int, float)):
        raise InvalidItem(f"{KIND}: amount is not a number")
    when = item.get("datetime") or item.get("authorized_datetime")
    occurred = parse_datetime(when) if when else date_start(require(item, "date", KIND))
    pfc = item.get("personal_finance_category") or {}
    category = [c for c in (pfc.get("primary"), pfc.get("detailed")) if c] or item.get("category")
    return Record(
        kind=KIND,
        external_id=require(item, "transaction_id", KIND),
        occurred_at=occurred,
        data={
            "transaction_id": item["transaction_id"],
            "account_id": require(item, "account_id", KIND),
            "date": require(item, "date", KIND),
            "datetime": parse_datetime(item["datetime"]) if item.get("datetime") else None,
            "amount": amount,
            "currency": item.get("iso_currency_code") or item.get("unofficial_currency_code"),
            "name": require(item, "name", KIND),
            "merchant": item.get("merchant_name"),
            "category": category,
            "pending": bool(item.get("pending", False)),
            "pending_transaction_id": item.get("pending_transaction_id"),
        },
    )


def page_process(stream: str, payload: dict[str, Any]) -> ProcessedPage:
    page = ProcessedPage()
    items_process(page, payload.get("added", []), transaction_record, kind=KIND)
    items_process(page, payload.get("modified", []), transaction_record, kind=KIND)
    for removed in payload.get("removed", []):
        if isinstance(removed, dict) and removed.get("transaction_id"):
            page.removed.append((KIND, removed["transaction_id"]))
    return page
