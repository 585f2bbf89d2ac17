"""Record kinds that several providers produce, declared once and referenced by each provider's
``kinds`` (a provider's own kinds live in its package's ``kinds.py``).

A kind's fields are what any source of it can fill; a provider leaves out the optional ones it
does not have.

``utc_offset_min``, in any kind that has it, is the offset from UTC in minutes of where the
record happened, as its source gives it (a sleep in New York in winter: -300). The record's times
are UTC; with the offset a reader has the local clock time the source saw, whatever the person's
own time zone is today.
"""

from __future__ import annotations

from datetime import datetime

from ingestion.schemas import NUMBER, FieldSpec, Kind

S = FieldSpec

# One day of activity (steps, active minutes) from a wearable or phone.
ACTIVITY_DAY = Kind(
    "activity_day",
    "behavioral",
    {
        "date": S(str),
        "steps": S(int),
        "active_minutes": S(int, required=False, nullable=True),
        "utc_offset_min": S(int, required=False, nullable=True),
    },
    # 2: the offset is utc_offset_min (records of version 1 have it in seconds, utc_offset_s).
    schema_version=2,
)

# One night's (or nap's) sleep.
SLEEP_SESSION = Kind(
    "sleep_session",
    "behavioral",
    {
        "start": S(datetime),
        "end": S(datetime),
        "minutes_asleep": S(int),
        "minutes_awake": S(int, required=False, nullable=True),
        "stages": S(dict, required=False, nullable=True),
        "main_sleep": S(bool, required=False, nullable=True),
        "utc_offset_min": S(int, required=False, nullable=True),
    },
    # 2: the offset is utc_offset_min (records of version 1 have it in seconds, utc_offset_s).
    schema_version=2,
)

# One day's heart rate summary.
HEART_RATE_DAY = Kind(
    "heart_rate_day",
    "behavioral",
    {
        "date": S(str),
        "resting_bpm": S(NUMBER, required=False, nullable=True),
        "min_bpm": S(NUMBER, required=False, nullable=True),
        "max_bpm": S(NUMBER, required=False, nullable=True),
        "avg_bpm": S(NUMBER, required=False, nullable=True),
        "samples": S(int, required=False, nullable=True),
        "utc_offset_min": S(int, required=False, nullable=True),
    },
)

# One workout (a run, a ride, a swim...) from a fitness source; the fields follow a typical
# fitness API's activity summary, each optional but the sport and the start.
WORKOUT = Kind(
    "workout",
    "behavioral",
    {
        "sport_type": S(str),
        "start_time": S(datetime),
        "name": S(str, required=False, nullable=True),
        "elapsed_s": S(NUMBER, required=False, nullable=True),
        "moving_s": S(NUMBER, required=False, nullable=True),
        "distance_m": S(NUMBER, required=False, nullable=True),
        "elevation_gain_m": S(NUMBER, required=False, nullable=True),
        "average_heartrate": S(NUMBER, required=False, nullable=True),
        "max_heartrate": S(NUMBER, required=False, nullable=True),
        "calories": S(NUMBER, required=False, nullable=True),
        "timezone": S(str, required=False, nullable=True),
        "utc_offset_min": S(int, required=False, nullable=True),
    },
)
