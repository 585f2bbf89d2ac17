"""The sandbox's RescueTime: its Analytic Data API and Daily Summary Feed, keyed by API key.

Any key starting with `sandbox-` is valid and is its own account (time data seeded by the key, in
a fixed local time zone); any other key gets RescueTime's HTTP 200 `{"error": "# key not found"}`,
and a bad query its HTTP 200 `{"error": "# query error"}`: clients must read the body, not only
the status (https://www.rescuetime.com/rtx/developers). Times are local, without offset.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET

from sources.sandbox.common import (
    RETRY_AFTER_SECONDS,
    fixed_zone,
    json_response,
    parse_iso_date,
    seeded_random,
    stable_int,
)
from sources.sandbox.faults import fault_active, fault_take, faults_pending

KEY_PREFIX = "sandbox-"
MAX_RANGE_DAYS = 366
NOTES = "data is an array of arrays (rows), column names for rows in row_headers"
_OFFSETS = [-18000, -21600, -25200, -28800, 0, 3600, 19800]

# (activity, category, overview category, productivity, documents)
ACTIVITIES = [
    ("VS Code", "Editing & IDEs", "Software Development", 2, ("sync.py", "models.py", "README.md")),
    ("github.com", "General Software Development", "Software Development", 2, ()),
    ("Terminal", "Systems Operations", "Software Development", 2, ()),
    ("stackoverflow.com", "General Reference & Learning", "Reference & Learning", 1, ()),
    ("docs.python.org", "General Reference & Learning", "Reference & Learning", 2, ()),
    ("Outlook", "Email", "Communication & Scheduling", 0, ()),
    ("Slack", "Instant Message", "Communication & Scheduling", 0, ()),
    ("Google Calendar", "Calendars", "Communication & Scheduling", 1, ()),
    ("Google Docs", "Writing", "Design & Composition", 2, ("Quarterly plan", "Meeting notes")),
    ("Figma", "Graphic Design", "Design & Composition", 2, ("Onboarding flow",)),
    ("Salesforce", "Customer Relations", "Business", 1, ()),
    ("youtube.com", "Video", "Entertainment", -2, ()),
    ("Spotify", "Music", "Entertainment", -1, ()),
    ("news.ycombinator.com", "General News & Opinion", "News & Opinion", -2, ()),
    ("twitter.com", "General Social Networking", "Social Networking", -2, ()),
    ("amazon.com", "General Shopping", "Shopping", -2, ()),
    ("Finder", "General Utilities", "Utilities", 0, ()),
    ("unknown-app", "Uncategorized", "Uncategorized", 0, ()),
]
_WORK = [i for i, a in enumerate(ACTIVITIES) if a[3] >= 0]
_LEISURE = [i for i, a in enumerate(ACTIVITIES) if a[3] <= 0]
_OVERVIEW_FIELDS = {
    "Business": "business",
    "Communication & Scheduling": "communication_and_scheduling",
    "Social Networking": "social_networking",
    "Design & Composition": "design_and_composition",
    "Entertainment": "entertainment",
    "News & Opinion": "news",
    "Software Development": "software_development",
    "Reference & Learning": "reference_and_learning",
    "Shopping": "shopping",
    "Utilities": "utilities",
    "Uncategorized": "uncategorized",
}
_LEVELS = {
    2: "very_productive",
    1: "productive",
    0: "neutral",
    -1: "distracting",
    -2: "very_distracting",
}
_KIND_COLUMNS = {
    "activity": ["Activity", "Category", "Productivity"],
    "category": ["Category"],
    "overview": ["Category"],
    "productivity": ["Productivity"],
    "efficiency": ["Efficiency (percent)"],
    "document": ["Document", "Activity", "Category", "Productivity"],
}


@dataclass(frozen=True)
class Segment:
    """Continuous time on one activity, inside one local hour."""

    start: datetime  # local, naive
    seconds: int
    activity: int
    document: str


def _key_offset(key: str) -> int:
    return _OFFSETS[stable_int("rescuetime-zone", key) % len(_OFFSETS)]


def local_now(key: str) -> datetime:
    return timezone.now().astimezone(fixed_zone(_key_offset(key))).replace(tzinfo=None)


def day_segments(key: str, day: date, now: datetime) -> list[Segment]:
    """One local day of tracked time, only the hours that are over."""
    segments = []
    weekend = day.weekday() >= 5
    for hour in range(8, 23):
        rng = seeded_random("rescuetime-hour", key, day.toordinal(), hour)
        working = not weekend and hour < 19
        if rng.random() > (0.9 if working else 0.35):
            continue
        start = datetime(day.year, day.month, day.day, hour)
        if start + timedelta(hours=1) > now:
            break
        pool = _WORK if working and rng.random() < 0.8 else _LEISURE
        offset = rng.randint(0, 300)
        for _ in range(rng.randint(1, 4)):
            activity = rng.choice(pool)
            seconds = min(rng.randint(60, 1500), 3600 - offset)
            documents = ACTIVITIES[activity][4]
            document = rng.choice(documents) if documents else "No Details"
            if seconds <= 0:
                break
            segments.append(Segment(start + timedelta(seconds=offset), seconds, activity, document))
            offset += seconds + rng.randint(0, 240)
    return segments


def _split_minutes(segment: Segment) -> Iterable[tuple[datetime, int]]:
    """RescueTime's `minute` resolution: five-minute buckets."""
    cursor, left = segment.start, segment.seconds
    while left > 0:
        bucket = cursor.replace(minute=cursor.minute - cursor.minute % 5, second=0)
        take = min(left, int((bucket + timedelta(minutes=5) - cursor).total_seconds()))
        yield bucket, take
        cursor += timedelta(seconds=take)
        left -= take


def _interval_start(moment: datetime, resolution: str) -> datetime:
    if resolution == "hour":
        return moment.replace(minute=0, second=0)
    day = datetime(moment.year, moment.month, moment.day)
    if resolution == "day":
        return day
    if resolution == "week":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)  # month


def _dimension(kind: str, segment: Segment) -> tuple:
    activity, category, overview, productivity, _ = ACTIVITIES[segment.activity]
    return {
        "activity": (activity, category, productivity),
        "category": (category,),
        "overview": (overview,),
        "productivity": (productivity,),
        "efficiency": (),
        "document": (segment.document, activity, category, productivity),
    }[kind]


def _efficiency(pairs: list[tuple[Segment, int]]) -> float:
    total = sum(seconds for _, seconds in pairs)
    score = sum(seconds * (ACTIVITIES[s.activity][3] + 2) / 4 for s, seconds in pairs)
    return round(100 * score / total, 2) if total else 0.0


@dataclass
class Query:
    key: str
    fmt: str
    perspective: str
    resolution: str
    kind: str
    begin: date
    end: date
    thing: str
    source: str


class QueryError(Exception):
    pass


def _first(request: HttpRequest, *names: str, default: str = "") -> str:
    for name in names:
        value = request.GET.get(name)
        if value not in (None, ""):
            return value
    return default


def query_parse(request: HttpRequest, key: str) -> Query:
    fmt = request.GET.get("format", "")
    perspective = _first(request, "perspective", "by", default="rank")
    resolution = _first(request, "resolution_time", "interval", "rs", default="hour")
    kind = _first(request, "restrict_kind", "rk", default="activity")
    source = _first(request, "restrict_source_type", default="computers")
    today = local_now(key).date()
    begin_raw = _first(request, "restrict_begin", "rb")
    end_raw = _first(request, "restrict_end", "re")
    begin = parse_iso_date(begin_raw) if begin_raw else today
    end = parse_iso_date(end_raw) if end_raw else today
    if (
        fmt not in ("json", "csv")
        or perspective not in ("rank", "interval")
        or resolution not in ("month", "week", "day", "hour", "minute")
        or kind not in _KIND_COLUMNS
        or source not in ("computers", "mobile", "offline")
        or begin is None
        or end is None
        or begin > end
        or (end - begin).days >= MAX_RANGE_DAYS
    ):
        raise QueryError
    thing = _first(request, "restrict_thing", "rt")
    return Query(key, fmt, perspective, resolution, kind, begin, end, thing, source)


def data_rows(query: Query) -> tuple[list[str], list[list]]:
    """The row headers and rows for a query, as /anapi/data returns them."""
    now = local_now(query.key)
    pairs: list[tuple[datetime, Segment, int]] = []
    if query.source == "computers":  # the sandbox account only ever used one computer
        day = query.begin
        while day <= min(query.end, now.date()):
            for segment in day_segments(query.key, day, now):
                activity, category, overview, *_ = ACTIVITIES[segment.activity]
                if query.thing and query.thing.lower() not in (
                    activity.lower(), category.lower(), overview.lower(),
                ):  # fmt: skip
                    continue
                if query.perspective == "interval" and query.resolution == "minute":
                    pairs.extend((b, segment, s) for b, s in _split_minutes(segment))
                else:
                    pairs.append(
                        (_interval_start(segment.start, query.resolution), segment, segment.seconds)
                    )
            day += timedelta(days=1)

    first = "Date" if query.perspective == "interval" else "Rank"
    headers = [first, "Time Spent (seconds)", "Number of People", *_KIND_COLUMNS[query.kind]]
    groups: dict[tuple, list[tuple[Segment, int]]] = defaultdict(list)
    for when, segment, seconds in pairs:
        bucket = when if query.perspective == "interval" else None
        groups[(bucket, _dimension(query.kind, segment))].append((segment, seconds))
    rows = []
    for (bucket, dimension), members in groups.items():
        total = sum(seconds for _, seconds in members)
        values = [_efficiency(members)] if query.kind == "efficiency" else list(dimension)
        label = bucket.strftime("%Y-%m-%dT%H:%M:%S") if bucket else None
        rows.append([label, total, 1, *values])
    if query.perspective == "interval":
        rows.sort(key=lambda r: (r[0], -r[1], str(r[3:])))
    else:
        rows.sort(key=lambda r: (-r[1], str(r[3:])))
        for rank, row in enumerate(rows, start=1):
            row[0] = rank
    return headers, rows


def _duration(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def daily_summary(key: str, day: date, now: datetime) -> dict:
    """One Daily Summary Feed entry, consistent with /anapi/data for the same day."""
    by_level: dict[int, int] = defaultdict(int)
    by_overview: dict[str, int] = defaultdict(int)
    for segment in day_segments(key, day, now):
        _, _, overview, productivity, _ = ACTIVITIES[segment.activity]
        by_level[productivity] += segment.seconds
        by_overview[overview] += segment.seconds
    total = sum(by_level.values())
    amounts: dict[str, int] = {name: by_level[level] for level, name in _LEVELS.items()}
    amounts["all_productive"] = by_level[2] + by_level[1]
    amounts["all_distracting"] = by_level[-1] + by_level[-2]
    for overview, name in _OVERVIEW_FIELDS.items():
        amounts[name] = by_overview[overview]
    score = sum(seconds * (level + 2) / 4 for level, seconds in by_level.items())
    midnight = datetime(day.year, day.month, day.day, tzinfo=fixed_zone(_key_offset(key)))
    entry: dict = {
        "id": int(midnight.timestamp()),
        "date": day.isoformat(),
        "productivity_pulse": round(100 * score / total) if total else 0,
    }
    for name, seconds in amounts.items():
        entry[f"{name}_percentage"] = round(100 * seconds / total, 1) if total else 0.0
    entry["total_hours"] = round(total / 3600, 2)
    for name, seconds in amounts.items():
        entry[f"{name}_hours"] = round(seconds / 3600, 2)
    entry["total_duration_formatted"] = _duration(total)
    for name, seconds in amounts.items():
        entry[f"{name}_duration_formatted"] = _duration(seconds)
    return entry


# --- Views ----------------------------------------------------------------------------------------


def key_not_found() -> HttpResponse:
    return json_response({"error": "# key not found", "messages": "key not found"})


def query_error() -> HttpResponse:
    return json_response(
        {
            "error": "# query error",
            "messages": "Error: Likely a badly formatted or missing parameter",
        }
    )


def _gate(request: HttpRequest) -> tuple[str, set[str]] | HttpResponse:
    """Key check, then the key's rate-limit and server-error faults."""
    key = request.GET.get("key", "")
    if not key.startswith(KEY_PREFIX) or len(key) <= len(KEY_PREFIX):
        return key_not_found()
    if fault_active("rescuetime", key, "revoke"):
        return key_not_found()
    pending = faults_pending("rescuetime", key)
    if fault_take("rescuetime", key, "rate_limit", pending):
        return json_response(
            {"error": "# rate limit exceeded", "messages": "Too many requests; try again later"},
            status=429,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    if fault_take("rescuetime", key, "server_error", pending):
        return HttpResponse(
            "<html><body><h1>503 Service Unavailable</h1>"
            "<p>No server is available to handle this request.</p></body></html>",
            status=503,
            content_type="text/html",
        )
    return key, pending


@csrf_exempt
@require_GET
def anapi_data(request: HttpRequest) -> HttpResponse:
    gate = _gate(request)
    if isinstance(gate, HttpResponse):
        return gate
    key, pending = gate
    try:
        query = query_parse(request, key)
    except QueryError:
        return query_error()
    headers, rows = data_rows(query)
    if rows and fault_take("rescuetime", key, "malformed", pending):
        rows[0][1] = "NaN"
        if len(rows) > 1:
            rows[1] = rows[1][:-1]
    if query.fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(headers)
        writer.writerows(rows)
        return HttpResponse(out.getvalue(), content_type="text/csv; charset=utf-8")
    return json_response({"notes": NOTES, "row_headers": headers, "rows": rows})


@csrf_exempt
@require_GET
def daily_summary_feed(request: HttpRequest) -> HttpResponse:
    """The 14 days before today (local), newest first."""
    gate = _gate(request)
    if isinstance(gate, HttpResponse):
        return gate
    key, pending = gate
    now = local_now(key)
    today = now.date()
    entries = [daily_summary(key, today - timedelta(days=n), now) for n in range(1, 15)]
    if fault_take("rescuetime", key, "malformed", pending):
        entries[0]["date"] = None
        entries[0]["productivity_pulse"] = "n/a"
    return json_response(entries)


urlpatterns = [
    path("rescuetime/anapi/data", anapi_data, name="rescuetime-data"),
    path(
        "rescuetime/anapi/daily_summary_feed",
        daily_summary_feed,
        name="rescuetime-daily-summary-feed",
    ),
]
