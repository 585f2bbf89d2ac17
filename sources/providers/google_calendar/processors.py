"""Calendar API event pages -> calendar_event records (pure).

A page is ``{"calendar_id": str, "items": [Event, ...], "forget": [external id, ...]}``: the
events of one calendar as ``events.list`` returned them (``singleEvents=true``, so recurring
events come as their instances), and records to drop (a calendar wiped before a full sync again).
A cancelled event deletes its record: deleted events carry little more than their id.

A record's external id is the calendar's digest and the event's id: event ids are unique only
within a calendar, and the calendar id (often the person's address) stays out of the plaintext
envelope. The digest is unkeyed so that reprocessing a raw page gives the same ids.

A timed event keeps where it happens as its start's offset from UTC (``utc_offset_min``): by
the event's ``timeZone`` when it names one (a ``dateTime`` may be written in another zone, or in
UTC), else the ``dateTime``'s own offset. An all-day event has none: it is a date.
"""

from __future__ import annotations

import hashlib
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ingestion.processing import date_start, items_process, parse_datetime, utc_offset_min
from ingestion.schemas import InvalidItem, ProcessedPage, Quarantined, Record

KIND = "calendar_event"
# Event ids are 5 to 1024 characters; a longer one than this is digested into the key.
MAX_EVENT_ID_IN_KEY = 200


def calendar_key(calendar_id: str) -> str:
    return hashlib.sha256(calendar_id.encode()).hexdigest()[:16]


def external_id(calendar_id: str, event_id: str) -> str:
    if len(event_id) > MAX_EVENT_ID_IN_KEY:
        event_id = "h" + hashlib.sha256(event_id.encode()).hexdigest()
    return f"{calendar_key(calendar_id)}:{event_id}"


def _zone(name: Any, field: str) -> ZoneInfo | None:
    if name is None:
        return None
    try:
        return ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidItem(f"{KIND}: {field}.timeZone is not a known time zone") from None


def _when(value: Any, field: str) -> tuple[datetime | date, bool, str | None]:
    """An EventDateTime: (the date of an all-day event, or the instant; all day; time zone).

    ``dateTime`` carries its offset unless ``timeZone`` says where a local time is.
    """
    if not isinstance(value, dict):
        raise InvalidItem(f"{KIND}: {field} is not an object")
    zone_name = value.get("timeZone")
    if isinstance(value.get("date"), str):
        try:
            day = date.fromisoformat(value["date"])
        except ValueError:
            raise InvalidItem(f"{KIND}: {field}.date is not YYYY-MM-DD") from None
        if day.isoformat() != value["date"]:
            raise InvalidItem(f"{KIND}: {field}.date is not YYYY-MM-DD")
        return day, True, zone_name if isinstance(zone_name, str) else None
    if isinstance(value.get("dateTime"), str):
        raw = value["dateTime"]
        try:
            moment = parse_datetime(raw)
        except ValueError:
            raise InvalidItem(f"{KIND}: {field}.dateTime is not RFC 3339") from None
        zone = _zone(zone_name, field)
        naive = not (raw.endswith(("Z", "z")) or "+" in raw[10:] or "-" in raw[10:])
        if naive:
            if zone is None:
                raise InvalidItem(f"{KIND}: {field}.dateTime has no offset and no timeZone")
            moment = moment.replace(tzinfo=zone)
        return moment, False, zone_name if isinstance(zone_name, str) else None
    raise InvalidItem(f"{KIND}: {field} has neither date nor dateTime")


def _offset_min(start: datetime | date, zone_name: str | None) -> int | None:
    if not isinstance(start, datetime):
        return None
    zone = _zone(zone_name, "start") if zone_name else None
    return utc_offset_min((start.astimezone(zone) if zone else start).utcoffset())


def _text(event: dict[str, Any], key: str) -> str | None:
    value = event.get(key)
    return value if isinstance(value, str) else None


def _attendees(value: Any) -> list[dict[str, Any]]:
    attendees = []
    for entry in value if isinstance(value, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("email"), str):
            continue
        attendee: dict[str, Any] = {
            "email": entry["email"],
            "response_status": str(entry.get("responseStatus") or "needsAction"),
        }
        if isinstance(entry.get("displayName"), str):
            attendee["display_name"] = entry["displayName"]
        for source, name in (
            ("organizer", "organizer"),
            ("self", "self"),
            ("optional", "optional"),
        ):
            if entry.get(source) is True:
                attendee[name] = True
        attendees.append(attendee)
    return attendees


def event_record(calendar_id: str, event: dict[str, Any]) -> Record:
    event_id = event.get("id")
    if not isinstance(event_id, str) or not event_id:
        raise InvalidItem(f"{KIND}: id is not a string")
    if "start" not in event:
        raise InvalidItem(f"{KIND}: missing start")
    start, all_day, time_zone = _when(event["start"], "start")
    end = _when(event["end"], "end")[0] if event.get("end") is not None else None
    original = (
        _when(event["originalStartTime"], "originalStartTime")[0]
        if event.get("originalStartTime") is not None
        else None
    )
    updated = None
    if isinstance(event.get("updated"), str):
        try:
            updated = parse_datetime(event["updated"])
        except ValueError:
            raise InvalidItem(f"{KIND}: updated is not RFC 3339") from None
    organizer = event.get("organizer")
    occurred = start if isinstance(start, datetime) else date_start(start.isoformat())
    return Record(
        kind=KIND,
        external_id=external_id(calendar_id, event_id),
        occurred_at=occurred,
        data={
            "calendar_id": calendar_id,
            "event_id": event_id,
            "summary": _text(event, "summary") or "",
            "description": _text(event, "description"),
            "location": _text(event, "location"),
            "attendees": _attendees(event.get("attendees")),
            "start": start,
            "end": end,
            "all_day": all_day,
            "time_zone": time_zone,
            "utc_offset_min": _offset_min(start, time_zone),
            "status": _text(event, "status") or "confirmed",
            "recurring_event_id": _text(event, "recurringEventId"),
            "original_start": original,
            "organizer": organizer.get("email")
            if isinstance(organizer, dict) and isinstance(organizer.get("email"), str)
            else None,
            "event_type": _text(event, "eventType"),
            "html_link": _text(event, "htmlLink"),
            "updated": updated,
        },
    )


def page_process(stream: str, payload: Any) -> ProcessedPage:
    page = ProcessedPage()
    if not isinstance(payload, dict):
        page.quarantined.append(
            Quarantined(reason=f"{KIND}: page is not an object", item=payload, kind=KIND)
        )
        return page
    for key in payload.get("forget") or []:
        if isinstance(key, str) and key:
            page.removed.append((KIND, key))
    items = payload.get("items") or []
    if not items:
        return page
    calendar_id = payload.get("calendar_id")
    if not isinstance(calendar_id, str) or not calendar_id:
        page.quarantined.append(
            Quarantined(reason=f"{KIND}: page names no calendar", item=payload, kind=KIND)
        )
        return page
    live = []
    for item in items if isinstance(items, list) else [items]:
        if isinstance(item, dict) and item.get("status") == "cancelled":
            if isinstance(item.get("id"), str) and item["id"]:
                page.removed.append((KIND, external_id(calendar_id, item["id"])))
            else:
                page.quarantined.append(
                    Quarantined(reason=f"{KIND}: cancelled event without id", item=item, kind=KIND)
                )
            continue
        live.append(item)
    items_process(page, live, lambda event: event_record(calendar_id, event), kind=KIND)
    return page
