"""Helpers every processor uses: per-item isolation and parsing of provider time formats."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from ingestion.schemas import (
    UTC_OFFSET_MAX_MIN,
    InvalidItem,
    ProcessedPage,
    Quarantined,
    Record,
    field_name_like,
    record_validate,
)


def items_process(
    page: ProcessedPage,
    items: Iterable[Any],
    to_records: Callable[[Any], Record | list[Record]],
    *,
    kind: str,
) -> ProcessedPage:
    """Each item becomes validated records, or goes to quarantine with its reason; the rest of
    the page goes on either way."""
    for item in items:
        try:
            produced = to_records(item)
            for record in produced if isinstance(produced, list) else [produced]:
                page.records.append(record_validate(record))
        except InvalidItem as err:
            page.quarantined.append(Quarantined(reason=str(err), item=item, kind=kind))
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
            page.quarantined.append(
                Quarantined(reason=malformed_reason(kind, err), item=item, kind=kind)
            )
    return page


def malformed_reason(kind: str, err: Exception) -> str:
    """The quarantine reason for an item a processor could not read. Reasons are stored in
    plaintext, so they name the missing field or the error's class, never the message: Python's
    messages quote the value ("invalid literal for int() with base 10: '72 bpm'")."""
    if isinstance(err, KeyError) and err.args:
        # Named when it looks like a field name from the processor's code; any other key may
        # have been a value looked up in a table.
        name = err.args[0]
        return f"{kind}: malformed item (missing {name if field_name_like(name) else 'a key'})"
    return f"{kind}: malformed item ({type(err).__name__})"


def parse_datetime(value: str) -> datetime:
    """RFC 3339 / ISO 8601, with Z or an offset; naive values are taken as UTC."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def utc_offset_min(offset: timedelta | float | None) -> int | None:
    """A source's offset from UTC as records keep it (``utc_offset_min``): whole minutes, from a
    timedelta or a number of seconds. None when there is none, or when it is no offset any place
    has (beyond a day): kept out rather than stored."""
    if offset is None:
        return None
    seconds = offset.total_seconds() if isinstance(offset, timedelta) else offset
    minutes = round(seconds / 60)
    return minutes if abs(minutes) <= UTC_OFFSET_MAX_MIN else None


def date_start(value: str) -> datetime:
    """A calendar date as the UTC instant its day starts."""
    day = date.fromisoformat(value)
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def require(item: dict[str, Any], key: str, kind: str) -> Any:
    if key not in item or item[key] is None:
        raise InvalidItem(f"{kind}: missing {key}")
    return item[key]
