"""The record kind only Google Calendar produces."""

from __future__ import annotations

from datetime import date, datetime

from ingestion.schemas import FieldSpec as S
from ingestion.schemas import Kind

# An all-day event's start and end are dates (stored as "YYYY-MM-DD"), a timed event's instants;
# the end is exclusive, as Google gives it. A record is one event, or one instance of a recurring
# event (``recurring_event_id`` names its series, ``original_start`` the slot it was planned
# for). Every value is sealed with the rest of the record's data.
CALENDAR_EVENT = Kind(
    "calendar_event",
    "external",
    {
        "calendar_id": S(str),
        "event_id": S(str),
        "summary": S(str),
        "description": S(str, required=False, nullable=True),
        "location": S(str, required=False, nullable=True),
        # [{"email", "display_name", "response_status", "organizer", "self", "optional"}]
        "attendees": S(list),
        "start": S((datetime, date)),
        "end": S((datetime, date), nullable=True),
        "all_day": S(bool),
        "time_zone": S(str, required=False, nullable=True),
        # Where a timed event happens: its start's offset from UTC in minutes (all-day: None).
        "utc_offset_min": S(int, required=False, nullable=True),
        "status": S(str),
        "recurring_event_id": S(str, required=False, nullable=True),
        "original_start": S((datetime, date), required=False, nullable=True),
        "organizer": S(str, required=False, nullable=True),
        "event_type": S(str, required=False, nullable=True),
        "html_link": S(str, required=False, nullable=True),
        "updated": S(datetime, required=False, nullable=True),
    },
)
