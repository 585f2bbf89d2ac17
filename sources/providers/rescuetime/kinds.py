"""The record kinds only RescueTime produces."""

from __future__ import annotations

from ingestion.schemas import NUMBER, Kind
from ingestion.schemas import FieldSpec as S

# Time on one activity within one hour.
PRODUCTIVITY_HOUR = Kind(
    "productivity_hour",
    "behavioral",
    {
        "hour": S(str),
        "seconds": S(int),
        "activity": S(str),
        "category": S(str),
        "productivity": S(int),
        # The offset from UTC, in minutes, of the zone the hour was read in (the person's).
        "utc_offset_min": S(int, required=False, nullable=True),
    },
)

# One day's summary.
PRODUCTIVITY_DAY = Kind(
    "productivity_day",
    "behavioral",
    {
        "date": S(str),
        "productivity_pulse": S(NUMBER, nullable=True),
        "total_hours": S(NUMBER),
        "very_productive_hours": S(NUMBER, required=False, nullable=True),
        "distracting_hours": S(NUMBER, required=False, nullable=True),
        "software_development_hours": S(NUMBER, required=False, nullable=True),
        # The offset from UTC, in minutes, at the day's local midnight.
        "utc_offset_min": S(int, required=False, nullable=True),
    },
)
