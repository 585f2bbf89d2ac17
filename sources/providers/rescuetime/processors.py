"""RescueTime pages -> productivity_hour and productivity_day records (pure)."""

from __future__ import annotations

from typing import Any

from ingestion.processing import date_start, items_process, parse_datetime
from ingestion.schemas import InvalidItem, ProcessedPage, Quarantined, Record

HOUR_COLUMNS = ("Date", "Time Spent (seconds)", "Activity", "Category", "Productivity")


def hour_record(row: list[Any], columns: dict[str, int]) -> Record:
    if not isinstance(row, list) or len(row) < len(columns):
        raise InvalidItem("productivity_hour: short row")
    hour = row[columns["Date"]]
    activity = row[columns["Activity"]]
    seconds = row[columns["Time Spent (seconds)"]]
    productivity = row[columns["Productivity"]]
    if not isinstance(seconds, int) or not isinstance(productivity, int):
        raise InvalidItem("productivity_hour: seconds and productivity must be integers")
    return Record(
        kind="productivity_hour",
        external_id=f"{hour}|{activity}",
        # RescueTime gives local time without an offset; it is stored as given, read as UTC.
        occurred_at=parse_datetime(hour),
        data={
            "hour": hour,
            "seconds": seconds,
            "activity": str(activity),
            "category": str(row[columns["Category"]]),
            "productivity": productivity,
        },
    )


def day_record(entry: dict[str, Any]) -> Record:
    day = entry["date"]

    def hours(name: str) -> float | None:
        value = entry.get(name)
        return float(value) if isinstance(value, (int, float)) else None

    total = hours("total_hours")
    if total is None:
        raise InvalidItem("productivity_day: missing total_hours")
    return Record(
        kind="productivity_day",
        external_id=day,
        occurred_at=date_start(day),
        data={
            "date": day,
            "productivity_pulse": hours("productivity_pulse"),
            "total_hours": total,
            "very_productive_hours": hours("very_productive_hours"),
            "distracting_hours": hours("all_distracting_hours"),
            "software_development_hours": hours("software_development_hours"),
        },
    )


def page_process(stream: str, payload: Any) -> ProcessedPage:
    page = ProcessedPage()
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
            lambda row: hour_record(row, columns),
            kind="productivity_hour",
        )
    else:
        items_process(page, payload, day_record, kind="productivity_day")
    return page
