"""RescueTime pages -> productivity_hour and productivity_day records (pure).

RescueTime's times and dates are local, without an offset. A page as the client keeps it names
the zone they are in (``{"time_zone", "response"}``, see the client): each hour is stored as the
UTC instant it began there, each day from its local midnight, with that moment's offset
(``utc_offset_min``). A page kept before pages named their zone (RescueTime's answer alone) is
read in UTC, as it was then.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ingestion.processing import items_process, utc_offset_min
from ingestion.schemas import InvalidItem, ProcessedPage, Quarantined, Record

HOUR_COLUMNS = ("Date", "Time Spent (seconds)", "Activity", "Category", "Productivity")


def _zone(name: Any) -> tzinfo:
    # A name this machine's tz database lacks (a page reprocessed elsewhere) reads as UTC.
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        return UTC


def _unwrap(payload: Any) -> tuple[Any, tzinfo]:
    if isinstance(payload, dict) and "response" in payload and "time_zone" in payload:
        return payload["response"], _zone(payload["time_zone"])
    return payload, UTC


def _local(moment: datetime, zone: tzinfo) -> datetime:
    """A local time in ``zone``; the hour a clock goes back is taken as its first pass (fold 0),
    as RescueTime gives that hour once."""
    return moment if moment.tzinfo else moment.replace(tzinfo=zone)


def hour_record(row: list[Any], columns: dict[str, int], zone: tzinfo = UTC) -> Record:
    if not isinstance(row, list) or len(row) < len(columns):
        raise InvalidItem("productivity_hour: short row")
    hour = row[columns["Date"]]
    activity = row[columns["Activity"]]
    seconds = row[columns["Time Spent (seconds)"]]
    productivity = row[columns["Productivity"]]
    if not isinstance(seconds, int) or not isinstance(productivity, int):
        raise InvalidItem("productivity_hour: seconds and productivity must be integers")
    start = _local(datetime.fromisoformat(hour), zone)
    return Record(
        kind="productivity_hour",
        # The local hour as RescueTime names it: the same key whatever zone it is read in.
        external_id=f"{hour}|{activity}",
        occurred_at=start.astimezone(UTC),
        data={
            "hour": hour,
            "seconds": seconds,
            "activity": str(activity),
            "category": str(row[columns["Category"]]),
            "productivity": productivity,
            "utc_offset_min": utc_offset_min(start.utcoffset()),
        },
    )


def day_record(entry: dict[str, Any], zone: tzinfo = UTC) -> Record:
    day = entry["date"]
    civil = date.fromisoformat(day)
    midnight = datetime(civil.year, civil.month, civil.day, tzinfo=zone)

    def hours(name: str) -> float | None:
        value = entry.get(name)
        return float(value) if isinstance(value, (int, float)) else None

    total = hours("total_hours")
    if total is None:
        raise InvalidItem("productivity_day: missing total_hours")
    return Record(
        kind="productivity_day",
        external_id=day,
        occurred_at=midnight.astimezone(UTC),
        data={
            "date": day,
            "productivity_pulse": hours("productivity_pulse"),
            "total_hours": total,
            "very_productive_hours": hours("very_productive_hours"),
            "distracting_hours": hours("all_distracting_hours"),
            "software_development_hours": hours("software_development_hours"),
            "utc_offset_min": utc_offset_min(midnight.utcoffset()),
        },
    )


def page_process(stream: str, payload: Any) -> ProcessedPage:
    page = ProcessedPage()
    payload, zone = _unwrap(payload)
    if stream == "hours":
        headers = payload.get("row_headers") or []
        columns = {name: i for i, name in enumerate(headers)}
        if not set(HOUR_COLUMNS) <= set(columns):
            reason = f"productivity_hour: unexpected columns {headers[:8]}"
            page.quarantined.append(
                Quarantined(reason=reason, item=payload, kind="productivity_hour")
            )
            return page
        items_process(
            page,
            payload.get("rows", []),
            lambda row: hour_record(row, columns, zone),
            kind="productivity_hour",
        )
    else:
        items_process(page, payload, lambda entry: day_record(entry, zone), kind="productivity_day")
    return page
