"""Strava activity summaries -> workout records (pure).

Fields of SummaryActivity (https://developers.strava.com/docs/reference/#api-models-SummaryActivity):
``id`` is an int64 that may exceed 2^53 (kept exact: JSON integers parse as Python ints);
``sport_type`` replaces the deprecated ``type``; ``start_date`` is UTC; heart rates are
returned but undocumented; ``calories`` comes only with a detailed activity. Where the activity
took place is kept as its offset from UTC (``utc_offset_min``): ``utc_offset`` in seconds, which
Strava's examples carry but its schema does not list, else ``start_date_local`` (the local wall
clock written with a ``Z``) less ``start_date``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ingestion.processing import items_process, parse_datetime, utc_offset_min
from ingestion.schemas import InvalidItem, ProcessedPage, Quarantined, Record

KIND = "workout"
# Source field -> workout field, for the numbers that may be absent.
NUMBERS = {
    "elapsed_time": "elapsed_s",
    "moving_time": "moving_s",
    "distance": "distance_m",
    "total_elevation_gain": "elevation_gain_m",
    "average_heartrate": "average_heartrate",
    "max_heartrate": "max_heartrate",
    "calories": "calories",
}
# Durations and distances cannot be negative; an elevation gain neither.
NOT_NEGATIVE = {"elapsed_s", "moving_s", "distance_m", "elevation_gain_m", "calories"}


def _number(activity: dict[str, Any], source: str, target: str) -> float | int | None:
    value = activity.get(source)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidItem(f"{KIND}: {source} is not a number")
    if target in NOT_NEGATIVE and value < 0:
        raise InvalidItem(f"{KIND}: {source} must not be negative")
    return value


def _text(activity: dict[str, Any], name: str) -> str | None:
    value = activity.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidItem(f"{KIND}: {name} is not a string")
    return value


def _offset_min(activity: dict[str, Any], start: datetime) -> int | None:
    """The activity's offset from UTC in minutes, or None when Strava gives no usable one."""
    seconds = activity.get("utc_offset")
    if isinstance(seconds, int | float) and not isinstance(seconds, bool):
        return utc_offset_min(seconds)
    local = activity.get("start_date_local")
    if not isinstance(local, str):
        return None
    try:
        # The local clock time, written as if it were UTC.
        return utc_offset_min(parse_datetime(local) - start)
    except ValueError:
        return None


def activity_record(activity: Any) -> Record:
    if not isinstance(activity, dict):
        raise InvalidItem(f"{KIND}: item is not an object")
    activity_id = activity.get("id")
    if isinstance(activity_id, bool) or not isinstance(activity_id, int) or activity_id <= 0:
        raise InvalidItem(f"{KIND}: id is not a positive integer")
    sport = _text(activity, "sport_type") or _text(activity, "type")
    if not sport:
        raise InvalidItem(f"{KIND}: missing sport_type")
    start_text = _text(activity, "start_date")
    if not start_text:
        raise InvalidItem(f"{KIND}: missing start_date")
    try:
        start = parse_datetime(start_text)
    except ValueError:
        raise InvalidItem(f"{KIND}: start_date is not a date and time") from None
    data: dict[str, Any] = {
        "sport_type": sport,
        "start_time": start,
        "name": _text(activity, "name"),
        "timezone": _text(activity, "timezone"),
        "utc_offset_min": _offset_min(activity, start),
    }
    for source, target in NUMBERS.items():
        data[target] = _number(activity, source, target)
    return Record(kind=KIND, external_id=str(activity_id), occurred_at=start, data=data)


def page_process(stream: str, payload: Any) -> ProcessedPage:
    page = ProcessedPage()
    if not isinstance(payload, list):
        page.quarantined.append(
            Quarantined(reason=f"{stream}: the page is not a list", item=payload, kind=KIND)
        )
        return page
    return items_process(page, payload, activity_record, kind=KIND)
