"""Google Health API windows -> activity_day, heart_rate_day and sleep_session records (pure).

int64 values arrive as JSON strings ("count": "2038"); offsets as "-18000s", kept in minutes
(``utc_offset_min``).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from typing import Any

from ingestion.processing import date_start, items_process, parse_datetime, utc_offset_min
from ingestion.schemas import InvalidItem, ProcessedPage, Quarantined, Record


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise InvalidItem(f"{what} is not a number")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidItem(f"{what} is not a number") from None


def _offset_s(text: Any) -> int | None:
    if isinstance(text, str) and text.endswith("s"):
        try:
            return int(float(text[:-1]))
        except ValueError:
            return None
    return None


def _civil_date(civil: dict[str, Any]) -> str:
    d = civil["date"]
    return f"{int(d['year']):04d}-{int(d['month']):02d}-{int(d['day']):02d}"


def _day_start_utc(day: str, offset_s: int | None) -> Any:
    return date_start(day) - timedelta(seconds=offset_s or 0)


def _steps(page: ProcessedPage, points: list[Any]) -> None:
    days: dict[str, dict[str, int | None]] = defaultdict(lambda: {"steps": 0, "offset": None})

    def add(point: dict[str, Any]) -> list[Record]:
        steps = point["steps"]
        interval = steps["interval"]
        day = _civil_date(interval["civilStartTime"])
        days[day]["steps"] += _int(steps["count"], "steps.count")
        days[day]["offset"] = _offset_s(interval.get("startUtcOffset"))
        return []

    items_process(page, points, add, kind="activity_day")
    for day, total in sorted(days.items()):
        page.records.append(
            Record(
                kind="activity_day",
                external_id=day,
                occurred_at=_day_start_utc(day, total["offset"]),
                data={
                    "date": day,
                    "steps": total["steps"],
                    "utc_offset_min": utc_offset_min(total["offset"]),
                },
            )
        )


def _heart_rate(page: ProcessedPage, points: list[Any]) -> None:
    days: dict[str, list[int]] = defaultdict(list)
    offsets: dict[str, int | None] = {}

    def add(point: dict[str, Any]) -> list[Record]:
        sample = point["heartRate"]
        time = sample["sampleTime"]
        day = _civil_date(time["civilTime"])
        days[day].append(_int(sample["beatsPerMinute"], "heartRate.beatsPerMinute"))
        offsets[day] = _offset_s(time.get("utcOffset"))
        return []

    items_process(page, points, add, kind="heart_rate_day")
    for day, bpm in sorted(days.items()):
        page.records.append(
            Record(
                kind="heart_rate_day",
                external_id=day,
                occurred_at=_day_start_utc(day, offsets.get(day)),
                data={
                    "date": day,
                    "min_bpm": min(bpm),
                    "max_bpm": max(bpm),
                    "avg_bpm": round(sum(bpm) / len(bpm), 1),
                    "samples": len(bpm),
                    "utc_offset_min": utc_offset_min(offsets.get(day)),
                },
            )
        )


def _sleep(point: dict[str, Any]) -> Record:
    sleep = point["sleep"]
    interval = sleep["interval"]
    summary = sleep.get("summary") or {}
    stages = {
        s["type"]: _int(s.get("minutes"), "stagesSummary.minutes")
        for s in summary.get("stagesSummary") or []
    }
    name = point.get("name")
    if not name:
        raise InvalidItem("sleep_session: missing name")
    return Record(
        kind="sleep_session",
        external_id=name.rsplit("/", 1)[-1],
        occurred_at=parse_datetime(interval["startTime"]),
        data={
            "start": parse_datetime(interval["startTime"]),
            "end": parse_datetime(interval["endTime"]),
            "minutes_asleep": _int(summary.get("minutesAsleep"), "summary.minutesAsleep"),
            "minutes_awake": _int(summary.get("minutesAwake", 0), "summary.minutesAwake"),
            "stages": stages or None,
            "main_sleep": (sleep.get("metadata") or {}).get("mainSleep"),
            "utc_offset_min": utc_offset_min(_offset_s(interval.get("endUtcOffset"))),
        },
    )


def page_process(stream: str, payload: dict[str, Any]) -> ProcessedPage:
    page = ProcessedPage()
    points = payload.get("dataPoints")
    if not isinstance(points, list):
        page.quarantined.append(Quarantined(reason=f"{stream}: no dataPoints list", item=payload))
    elif stream == "steps":
        _steps(page, points)
    elif stream == "heart-rate":
        _heart_rate(page, points)
    else:
        items_process(page, points, _sleep, kind="sleep_session")
    return page
