"""Gmail message metadata pages -> email_message records (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import getaddresses
from typing import Any

from ingestion.processing import items_process, require
from ingestion.schemas import InvalidItem, ProcessedPage, Quarantined, Record

KIND = "email_message"


def _headers(message: dict[str, Any]) -> dict[str, list[str]]:
    """Header values by lower-cased name; names are case-insensitive (RFC 5322)."""
    payload = message.get("payload")
    found: dict[str, list[str]] = {}
    if not isinstance(payload, dict):
        return found
    for header in payload.get("headers") or []:
        if isinstance(header, dict) and isinstance(header.get("name"), str):
            value = header.get("value")
            found.setdefault(header["name"].lower(), []).append(
                value if isinstance(value, str) else ""
            )
    return found


def _internal_date(message: dict[str, Any]) -> datetime:
    raw = require(message, "internalDate", KIND)
    try:
        millis = int(raw)
        if isinstance(raw, bool) or millis < 0:
            raise ValueError(raw)
        return datetime.fromtimestamp(millis / 1000, tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        raise InvalidItem(f"{KIND}: internalDate is not epoch milliseconds") from None


def _addresses(values: list[str]) -> list[str]:
    # "undisclosed-recipients:;" and other groups without members give empty addresses.
    return [address for _name, address in getaddresses(values) if address]


def _size(message: dict[str, Any]) -> int:
    size = message.get("sizeEstimate")
    if isinstance(size, int) and not isinstance(size, bool):
        return size
    if isinstance(size, str) and size.isdigit():
        return int(size)
    return 0


def message_record(message: dict[str, Any]) -> Record:
    message_id = require(message, "id", KIND)
    if not isinstance(message_id, str) or not message_id:
        raise InvalidItem(f"{KIND}: id is not a string")
    occurred = _internal_date(message)
    headers = _headers(message)
    labels = message.get("labelIds")
    snippet = message.get("snippet")
    return Record(
        kind=KIND,
        external_id=message_id,
        occurred_at=occurred,
        data={
            "message_id": message_id,
            "thread_id": str(message.get("threadId") or message_id),
            "internal_date": occurred,
            "from": (headers.get("from") or [""])[0],
            "to": _addresses(headers.get("to", [])),
            "subject": (headers.get("subject") or [""])[0],
            "labels": [label for label in labels if isinstance(label, str)]
            if isinstance(labels, list)
            else [],
            "snippet": snippet if isinstance(snippet, str) else "",
            "size": _size(message),
        },
    )


def page_process(stream: str, payload: Any) -> ProcessedPage:
    page = ProcessedPage()
    if not isinstance(payload, dict):
        page.quarantined.append(Quarantined(reason=f"{KIND}: page is not an object", item=payload))
        return page
    items_process(page, payload.get("messages") or [], message_record, kind=KIND)
    for message_id in payload.get("deleted") or []:
        if isinstance(message_id, str) and message_id:
            page.removed.append((KIND, message_id))
    return page
