"""Plaid's processor against recorded /transactions/sync pages (fixtures/, from Plaid's API
reference): added and modified transactions become records, removed ones removals; a broken
transaction is quarantined with a reason naming the field, never its value."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import pytest

from sources.providers.plaid.processors import page_process
from tests.sources.providers.kit import fixture

ID = "plaid"


def page() -> dict:
    return copy.deepcopy(fixture(ID, "transactions_sync_initial"))


def test_added_and_modified_transactions_become_records_and_removed_ones_removals():
    processed = page_process("transactions", page())
    assert processed.quarantined == []
    added, modified = processed.records
    assert added.kind == "transaction"
    assert added.external_id == "lPNjeW1nR6CDn5okmGQ6hEpMo4lLNoSrzqDje"
    assert added.occurred_at == datetime(2023, 9, 24, 11, 1, 1, tzinfo=UTC)
    assert added.data == {
        "transaction_id": "lPNjeW1nR6CDn5okmGQ6hEpMo4lLNoSrzqDje",
        "account_id": "BxBXxLj1m4HMXBm9WZZmCWVbPjX16EHwv99vp",
        "date": "2023-09-24",
        "datetime": datetime(2023, 9, 24, 11, 1, 1, tzinfo=UTC),
        "amount": 72.1,
        "currency": "USD",
        "name": "PURCHASE WM SUPERCENTER #1700",
        "merchant": "Walmart",
        "category": ["GENERAL_MERCHANDISE", "GENERAL_MERCHANDISE_SUPERSTORES"],
        "pending": False,
        "pending_transaction_id": "no86Eox18VHMvaOVL7gPUM9ap3aR1LsAVZ5nc",
    }
    # No datetime from the bank: the day it was posted, at midnight UTC.
    assert modified.occurred_at == datetime(2023, 9, 28, tzinfo=UTC)
    assert modified.data["datetime"] is None and modified.data["pending"] is True
    assert processed.removed == [("transaction", "CmdQTNgems8BT1B7ibkoUXVPyAeehT3Tmzk0l")]


def test_a_page_before_the_first_update_gives_nothing():
    processed = page_process("transactions", fixture(ID, "transactions_sync_empty"))
    assert (processed.records, processed.removed, processed.quarantined) == ([], [], [])


def test_the_legacy_category_serves_when_there_is_no_personal_finance_category():
    payload = page()
    del payload["added"][0]["personal_finance_category"]
    (record, _) = page_process("transactions", payload).records
    assert record.data["category"] == ["Shops", "Supermarkets and Groceries"]


def test_an_unofficial_currency_is_kept():
    payload = page()
    payload["added"][0].update(iso_currency_code=None, unofficial_currency_code="CAD")
    assert page_process("transactions", payload).records[0].data["currency"] == "CAD"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("amount", "seventy two dollars and ten cents"),
        ("amount", True),
        ("transaction_id", None),
        ("name", None),
        ("account_id", None),
        ("datetime", "the night after my appointment"),
    ],
)
def test_a_broken_transaction_is_quarantined_without_its_value_and_the_rest_kept(field, value):
    payload = page()
    payload["added"][0][field] = value
    processed = page_process("transactions", payload)
    assert [r.external_id for r in processed.records] == ["yhnUVvtcGGcCKU0bcz8PDQr5ZUxUXebUvbKC0"]
    (quarantined,) = processed.quarantined
    assert quarantined.kind == "transaction" and quarantined.reason.startswith("transaction")
    if isinstance(value, str):
        assert value not in quarantined.reason
    assert "72.1" not in quarantined.reason and "WM SUPERCENTER" not in quarantined.reason


def test_a_removal_without_an_id_is_ignored():
    payload = page()
    payload["removed"] += [{"account_id": "x"}, "junk", {"transaction_id": ""}]
    assert page_process("transactions", payload).removed == [
        ("transaction", "CmdQTNgems8BT1B7ibkoUXVPyAeehT3Tmzk0l")
    ]
