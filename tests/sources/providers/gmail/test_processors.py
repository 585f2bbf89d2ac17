"""Gmail's processor against recorded payloads (fixtures/, from the Gmail API reference): a
messages.get(format=metadata) resource becomes an email_message record; broken items are
quarantined with a reason naming the field, never its value; deletions become removals."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sources.providers.gmail.client import _history_changes
from sources.providers.gmail.processors import page_process
from tests.sources.providers.kit import fixture

ID = "gmail"


def message(**overrides) -> dict:
    """A messages.get(format=metadata) resource as Gmail sends it, with some fields changed."""
    return {**fixture(ID, "messages_get_metadata"), **overrides}


def test_message_becomes_an_email_message_record():
    page = page_process("messages", {"messages": [message()]})
    assert page.quarantined == [] and page.removed == []
    (record,) = page.records
    when = datetime(2026, 1, 1, tzinfo=UTC)
    assert record.kind == "email_message"
    assert record.external_id == "18c0ffee00000001"
    assert record.occurred_at == when
    assert record.data == {
        "message_id": "18c0ffee00000001",
        "thread_id": "18c0ffee00000000",
        "internal_date": when,
        "from": "Alex Rivera <alex@example.org>",
        "to": ["ada@example.com", "bob@example.net"],
        "subject": "The draft",
        "labels": ["INBOX", "UNREAD"],
        "snippet": "Hi Ada, the draft is attached",
        "size": 4321,
    }


@pytest.mark.parametrize(
    "payload",
    [None, {}, {"partId": ""}, {"headers": []}, {"headers": [{"name": "X-Other", "value": "1"}]}],
)
def test_missing_headers_are_tolerated(payload):
    item = message(payload=payload)
    if payload is None:
        del item["payload"]
    page = page_process("messages", {"messages": [item]})
    assert page.quarantined == []
    data = page.records[0].data
    assert (data["from"], data["to"], data["subject"]) == ("", [], "")


def test_missing_optional_fields_get_neutral_values():
    item = {"id": "a1", "internalDate": "1767225600000"}
    (record,) = page_process("messages", {"messages": [item]}).records
    assert record.data["thread_id"] == "a1"
    assert (record.data["labels"], record.data["snippet"], record.data["size"]) == ([], "", 0)


def test_undisclosed_recipients_give_no_address():
    item = message(payload={"headers": [{"name": "To", "value": "undisclosed-recipients:;"}]})
    assert page_process("messages", {"messages": [item]}).records[0].data["to"] == []


@pytest.mark.parametrize(
    "broken",
    [
        {"internalDate": "not-a-timestamp"},
        {"internalDate": None},
        {"internalDate": ""},
        {"internalDate": "-5"},
        {"internalDate": "9" * 30},
        {"internalDate": 1.5e300},
        {"id": None},
        {"id": ""},
        {"id": 42},
    ],
)
def test_unusable_id_or_internal_date_is_quarantined_and_the_rest_kept(broken):
    page = page_process(
        "messages", {"messages": [message(id="good-1"), message(**broken), message(id="good-2")]}
    )
    assert [r.external_id for r in page.records] == ["good-1", "good-2"]
    (quarantined,) = page.quarantined
    assert quarantined.kind == "email_message"
    assert quarantined.reason.startswith("email_message:")


def test_the_sandbox_malformed_shape_is_quarantined():
    item = message(internalDate="not-a-timestamp")
    del item["payload"]["headers"]
    page = page_process("messages", {"messages": [item, "not an object"]})
    assert page.records == []
    assert len(page.quarantined) == 2
    assert "internalDate" in page.quarantined[0].reason


def test_deleted_ids_become_removed_entries():
    page = page_process("messages", {"messages": [], "deleted": ["m1", "", None, "m2"]})
    assert page.removed == [("email_message", "m1"), ("email_message", "m2")]


@pytest.mark.parametrize("payload", [{}, {"messages": [], "deleted": []}])
def test_an_empty_page_gives_nothing(payload):
    page = page_process("messages", payload)
    assert (page.records, page.removed, page.quarantined) == ([], [], [])


def test_history_skips_messages_deleted_later_in_the_same_history():
    def entry(key, mid):
        return {"id": "1", key: [{"message": {"id": mid, "threadId": mid}}]}

    added, deleted = _history_changes(
        [
            entry("messagesAdded", "a"),
            entry("messagesAdded", "b"),
            entry("messagesDeleted", "a"),
            entry("messagesDeleted", "old"),
            entry("messagesAdded", "c"),
            entry("messagesAdded", "c"),
            {"id": "2", "messagesAdded": [{"message": None}, "junk"]},
        ]
    )
    assert added == ["b", "c"]
    assert deleted == ["a", "old"]


def test_a_history_page_gives_what_was_added_and_what_was_deleted():
    added, deleted = _history_changes(fixture(ID, "history_list")["history"])
    # The fifth message arrived and was deleted within the same history: nothing to fetch.
    assert added == ["18c0ffee00000004"]
    assert deleted == ["18c0ffee00000001", "18c0ffee00000005"]


def test_quarantine_reasons_name_the_field_never_its_value():
    secret = "1767225600000-private"
    page = page_process("messages", {"messages": [message(internalDate=secret)]})
    (quarantined,) = page.quarantined
    assert "internalDate" in quarantined.reason and secret not in quarantined.reason
