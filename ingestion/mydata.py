"""Reads for a person's own "My data" page: a day-by-day summary of their measures (sleep, steps,
workouts, spending, productive time, meetings, mood...), a chart per measure, counts, and the
latest records of each kind, paged.

Every query is filtered by the person first and keeps to the record indexes (``user, kind,
occurred_at`` for everything read here; counts read the ``user`` prefix), as flat filter
documents (README, "Queries the embedded server cannot index"). Counts read only the plaintext
envelope. Every value of a record is sealed, and the records are read through the plain client,
which does not decrypt: only what the page shows is decrypted, here, through ``record_decode``
under the owner's key: the measures' kinds over the chart's days, and one page of records per
kind.

Days are the person's civil days in their time zone (``sibling.people.person_zone``), or the
source's own day where a kind names one (a ``date`` field, "YYYY-MM-DD", as the source counted
it).

The measures are declared once, in :data:`MEASURES`: which field of which kind each reads and
how a day's figures add up. Adding a measure, or a kind to one, is a line there.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.utils import timezone
from pymongo import DESCENDING

from ingestion.schemas import CATEGORY_COLLECTIONS, InvalidItem, kind_get
from ingestion.storage import record_decode, records_collection
from sources.providers import ProviderNotFound, get_provider

PAGE_SIZE = 10
CHART_DAYS = 30
SUMMARY_DAYS = 7
# A record's day may come from a field other than occurred_at (a night's sleep counts on the day
# it ends, a bank's date is its own): records this much either side of the window are read too,
# and kept only if their day falls inside it.
DAY_MARGIN = timedelta(days=2)

# The fields that tell one record of a kind from another at a glance; the rest are in the export.
SUMMARY_FIELDS: dict[str, tuple[str, ...]] = {
    "email_message": ("from", "subject"),
    "transaction": ("name", "merchant", "amount", "currency", "pending"),
    "activity_day": ("date", "steps", "active_minutes"),
    "sleep_session": ("start", "end", "minutes_asleep"),
    "heart_rate_day": ("date", "resting_bpm", "avg_bpm"),
    "productivity_hour": ("activity", "category", "seconds"),
    "productivity_day": ("date", "productivity_pulse", "total_hours"),
    "mood_rating": ("rating", "note"),
    "note": ("text", "tags"),
    "sleep_log": ("start", "end", "quality"),
    "screen_time": ("date", "app", "seconds"),
    "workout": ("sport_type", "name", "start_time", "distance_m", "moving_s"),
    "calendar_event": ("summary", "start", "end", "location"),
}
FALLBACK_FIELD_COUNT = 4
OWN_PROVIDER_LABEL = "Added by you"  # records of Sibling's own apps and of this page


# --- the measures ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """What one kind of record adds to a measure.

    ``field`` is the number read (scaled by ``scale`` into the measure's unit; ``fallback`` is
    read when it is missing or null); with ``end`` it is instead a start time and the figure is
    the minutes from it to ``end``; without ``field`` each record counts one. ``day`` names the
    field that says which day the record belongs to: a "YYYY-MM-DD" string is that day, a
    datetime its date in the person's zone; without it, occurred_at's date in the person's
    zone. ``keep`` picks the records that count; ``split`` names a field whose values are kept
    apart as separate series (amounts in different currencies never add up).
    """

    kind: str
    field: str = ""
    end: str = ""
    fallback: str = ""
    scale: float = 1.0
    day: str = ""
    keep: Callable[[dict[str, Any]], bool] | None = None
    split: str = ""

    def fields(self) -> list[str]:
        return [
            name for name in (self.field, self.end, self.fallback, self.day, self.split) if name
        ]

    def value(self, data: dict[str, Any]) -> float | None:
        """The figure one record adds, or None when it adds nothing."""
        if self.keep is not None and not self.keep(data):
            return None
        if not self.field:
            return 1.0
        if self.end:
            start, end = data.get(self.field), data.get(self.end)
            if not isinstance(start, datetime) or not isinstance(end, datetime) or end < start:
                return None
            return (end - start).total_seconds() / 60
        value = data.get(self.field)
        if value is None and self.fallback:
            value = data.get(self.fallback)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        if not math.isfinite(value):
            return None
        return value * self.scale

    def day_of(self, data: dict[str, Any], occurred_at: datetime, zone: tzinfo) -> date | None:
        value = data.get(self.day) if self.day else occurred_at
        if isinstance(value, datetime):
            return _aware(value).astimezone(zone).date()
        if isinstance(value, str):
            try:
                return date.fromisoformat(value[:10])
            except ValueError:
                return None
        return _aware(occurred_at).astimezone(zone).date()


@dataclass(frozen=True)
class Measure:
    """One line of the summary and one chart: figures per day from the ``parts``' kinds.

    A day's figure is the sum of its records' figures, or their mean with ``average``. Where
    several sources (a provider's kind) give the measure for the same day, their figures add
    up, unless ``overlapping``: then they tell the same thing twice (the same night from a
    wearable and from a hand-written log, the same walk from two trackers) and the largest
    counts.
    """

    key: str
    label: str
    unit: str  # how a figure is shown: see _UNIT_FORMATS
    parts: tuple[Part, ...]
    average: bool = False
    overlapping: bool = False


def _money_out(data: dict[str, Any]) -> bool:
    # A transaction's amount is positive for money leaving the account (refunds and income are
    # negative), as banks' aggregators report it.
    amount = data.get("amount")
    return isinstance(amount, (int, float)) and amount > 0


def _productive(data: dict[str, Any]) -> bool:
    # Productivity runs from -2 (very distracting) to 2 (very productive); 0 is neutral.
    productivity = data.get("productivity")
    return isinstance(productivity, int) and productivity > 0


# Calendar entries that are no meeting: a day off, time blocked to work alone, where one works.
NOT_MEETINGS = frozenset({"outOfOffice", "focusTime", "workingLocation", "birthday"})


def _meeting(data: dict[str, Any]) -> bool:
    """A timed calendar event that takes place and that the person has not declined."""
    if data.get("all_day") or data.get("status") == "cancelled":
        return False
    if data.get("event_type") in NOT_MEETINGS:
        return False
    for attendee in data.get("attendees") or []:
        if isinstance(attendee, dict) and attendee.get("self"):
            return attendee.get("response_status") != "declined"
    return True


MEASURES: tuple[Measure, ...] = (
    Measure(
        "sleep",
        "Sleep",
        "minutes",
        (
            # A night counts on the day it ends (the morning one wakes up).
            Part("sleep_session", field="minutes_asleep", day="end"),
            Part("sleep_log", field="start", end="end", day="end"),
        ),
        overlapping=True,
    ),
    Measure(
        "steps",
        "Steps",
        "number",
        (Part("activity_day", field="steps", day="date"),),
        overlapping=True,
    ),
    Measure(
        "workouts",
        "Workouts",
        "minutes",
        (Part("workout", field="moving_s", fallback="elapsed_s", scale=1 / 60, day="start_time"),),
    ),
    Measure(
        "spending",
        "Spending",
        "money",
        (Part("transaction", field="amount", day="date", keep=_money_out, split="currency"),),
    ),
    Measure(
        "productive",
        "Productive time",
        "minutes",
        (Part("productivity_hour", field="seconds", scale=1 / 60, keep=_productive),),
    ),
    Measure("meetings", "Meetings", "count", (Part("calendar_event", day="start", keep=_meeting),)),
    Measure("mood", "Mood", "rating", (Part("mood_rating", field="rating"),), average=True),
    Measure(
        "heart_rate",
        "Heart rate",
        "bpm",
        # The day's resting rate where the source gives one, its average otherwise.
        (Part("heart_rate_day", field="resting_bpm", fallback="avg_bpm", day="date"),),
        average=True,
    ),
    Measure(
        "screen_time",
        "Screen time",
        "minutes",
        (Part("screen_time", field="seconds", scale=1 / 60, day="date"),),
    ),
)


def measures_check(measures: tuple[Measure, ...] = MEASURES) -> list[str]:
    """What is wrong with the declarations: a kind no source declares, a field its kind does not
    have (the kinds' fields are in ``sources/providers/kinds.py``, each provider's ``kinds.py``
    and ``ingestion.schemas``). Empty when all is well."""
    problems = []
    for measure in measures:
        for part in measure.parts:
            try:
                kind = kind_get(part.kind)
            except InvalidItem:
                problems.append(f"{measure.key}: unknown kind {part.kind}")
                continue
            problems.extend(
                f"{measure.key}: {part.kind} has no field {name}"
                for name in part.fields()
                if name not in kind.fields
            )
    return problems


def _minutes(value: float) -> str:
    minutes = round(value)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


_UNIT_FORMATS: dict[str, Callable[[float], str]] = {
    "minutes": _minutes,
    "number": lambda value: f"{round(value):,}",
    "count": lambda value: f"{round(value):,}",
    "money": lambda value: f"{value:,.2f}",
    "rating": lambda value: f"{value:.1f} of 5",
    "bpm": lambda value: f"{round(value)} bpm",
}


# --- the summary and the charts --------------------------------------------------------------

CHART_HEIGHT = 100  # the SVG's own units; the stylesheet sizes it
BAR_STEP = 10
BAR_WIDTH = 8


@dataclass
class DayFigure:
    day: date
    value: float | None  # None: nothing recorded that day
    shown: str
    x: int = 0
    y: int = CHART_HEIGHT
    height: int = 0


@dataclass
class Series:
    """One measure (one currency of it, for money) over the chart's days, oldest first."""

    key: str
    label: str
    unit: str
    days: list[DayFigure]
    split: str = ""

    @property
    def recorded(self) -> list[DayFigure]:
        return [figure for figure in self.days if figure.value is not None]

    @property
    def mean_shown(self) -> str:
        values = [figure.value for figure in self.recorded if figure.value is not None]
        return self.format(sum(values) / len(values)) if values else ""

    @property
    def peak(self) -> DayFigure | None:
        return max(self.recorded, key=lambda figure: figure.value or 0, default=None)

    def format(self, value: float) -> str:
        text = _UNIT_FORMATS[self.unit](value)
        return f"{text} {self.split}" if self.split else text


@dataclass
class Summary:
    zone: str
    today: date
    series: list[Series]
    rows: list[tuple[date, list[DayFigure]]]  # the recent days, newest first


def day_label(day: date, today: date) -> str:
    if day == today:
        return "Today"
    if day == today - timedelta(days=1):
        return "Yesterday"
    return f"{day:%a} {day.day} {day:%b}"


def person_today(zone: tzinfo, now: datetime | None = None) -> date:
    return (now or timezone.now()).astimezone(zone).date()


def summary(
    *,
    user: AbstractBaseUser,
    zone: tzinfo,
    kinds: Mapping[str, str],
    days: int = CHART_DAYS,
    recent: int = SUMMARY_DAYS,
    now: datetime | None = None,
) -> Summary:
    """The person's measures per civil day (in ``zone``) over the last ``days`` days.

    ``kinds`` maps each kind the person has to its collection: only those are read, one query
    per kind on the (user, kind, occurred_at) index, and only their records around the window
    are decrypted. A measure appears when it has a figure on at least one of the days.
    """
    today = person_today(zone, now)
    first = today - timedelta(days=days - 1)
    since = datetime.combine(first, time.min, tzinfo=zone).astimezone(UTC) - DAY_MARGIN
    until = datetime.combine(today + timedelta(days=1), time.min, tzinfo=zone).astimezone(UTC)
    until += DAY_MARGIN
    decoded = {
        kind: _window(user=user, collection=kinds[kind], kind=kind, since=since, until=until)
        for kind in sorted({part.kind for m in MEASURES for part in m.parts} & set(kinds))
    }
    labels = [first + timedelta(days=offset) for offset in range(days)]
    series: list[Series] = []
    for measure in MEASURES:
        # {split value: {day: {source: [figures]}}}
        found: dict[str, dict[date, dict[tuple[str, str], list[float]]]] = defaultdict(
            lambda: defaultdict(lambda: defaultdict(list))
        )
        for part in measure.parts:
            for provider, occurred_at, data in decoded.get(part.kind, ()):
                value = part.value(data)
                day = part.day_of(data, occurred_at, zone)
                if value is None or day is None or not first <= day <= today:
                    continue
                split = str(data.get(part.split) or "") if part.split else ""
                found[split][day][(provider, part.kind)].append(value)
        for split in sorted(found):
            per_day = {day: _day_figure(measure, sources) for day, sources in found[split].items()}
            series.append(_series(measure, split, labels, per_day))
    rows = [
        (day, [s.days[days - 1 - offset] for s in series])
        for offset, day in enumerate(reversed(labels[-recent:]))
    ]
    return Summary(zone=str(zone), today=today, series=series, rows=rows)


def _day_figure(measure: Measure, sources: Mapping[tuple[str, str], list[float]]) -> float:
    if measure.average:
        values = [value for figures in sources.values() for value in figures]
        return sum(values) / len(values)
    totals = [sum(figures) for figures in sources.values()]
    return max(totals) if measure.overlapping else sum(totals)


def _series(
    measure: Measure, split: str, labels: list[date], per_day: Mapping[date, float]
) -> Series:
    label = f"{measure.label} ({split})" if split else measure.label
    series = Series(
        key=f"{measure.key}-{split}" if split else measure.key,
        label=label,
        unit=measure.unit,
        days=[],
        split=split,
    )
    peak = max(per_day.values(), default=0) or 1
    for index, day in enumerate(labels):
        value = per_day.get(day)
        figure = DayFigure(
            day=day, value=value, shown=series.format(value) if value is not None else ""
        )
        figure.x = index * BAR_STEP + (BAR_STEP - BAR_WIDTH) // 2
        if value is not None and value > 0:
            # A day with a figure shows at least a sliver, so it stands apart from no figure.
            figure.height = max(1, round(CHART_HEIGHT * value / peak))
            figure.y = CHART_HEIGHT - figure.height
        series.days.append(figure)
    return series


def _window(
    *, user: AbstractBaseUser, collection: str, kind: str, since: datetime, until: datetime
) -> list[tuple[str, datetime, dict[str, Any]]]:
    """(provider, occurred_at, data) of the person's records of ``kind`` in [since, until)."""
    cursor = records_collection(collection).find(
        {"user": user.pk, "kind": kind, "occurred_at": {"$gte": since, "$lt": until}},
        {"provider": 1, "kind": 1, "occurred_at": 1, "sealed": 1, "data": 1},
    )
    return [
        (
            document["provider"],
            document["occurred_at"],
            record_decode(document, owner_id=user.pk)["data"],
        )
        for document in cursor
    ]


# --- counts and records ----------------------------------------------------------------------


def provider_label(provider_id: str) -> str:
    if provider_id == "sibling_app":
        return OWN_PROVIDER_LABEL
    try:
        return get_provider(provider_id).name
    except ProviderNotFound:
        return provider_id


def kind_label(kind: str) -> str:
    return kind.replace("_", " ").capitalize()


@dataclass
class CategoryCounts:
    category: str
    collection: str
    total: int = 0
    rows: list[CountRow] = field(default_factory=list)


@dataclass(order=True)
class CountRow:
    provider: str
    kind: str
    n: int

    @property
    def provider_label(self) -> str:
        return provider_label(self.provider)

    @property
    def kind_label(self) -> str:
        return kind_label(self.kind)


@dataclass
class LatestRecord:
    occurred_at: datetime
    kind: str
    provider: str
    details: list[tuple[str, str]]

    @property
    def provider_label(self) -> str:
        return provider_label(self.provider)

    @property
    def kind_label(self) -> str:
        return kind_label(self.kind)


def record_counts(*, user: AbstractBaseUser) -> list[CategoryCounts]:
    """Per category, the person's records counted by provider and kind: one aggregation per
    collection."""
    result = []
    for category, collection in CATEGORY_COLLECTIONS.items():
        counts = CategoryCounts(category=category, collection=collection)
        pipeline: list[dict[str, Any]] = [
            {"$match": {"user": user.pk}},
            {"$group": {"_id": {"provider": "$provider", "kind": "$kind"}, "n": {"$sum": 1}}},
        ]
        for row in records_collection(collection).aggregate(pipeline):
            counts.rows.append(CountRow(row["_id"]["provider"], row["_id"]["kind"], row["n"]))
        counts.rows.sort()
        counts.total = sum(row.n for row in counts.rows)
        result.append(counts)
    return result


def kinds_of(counts: list[CategoryCounts]) -> dict[str, tuple[str, int]]:
    """{kind: (its collection, the person's records of it)}, kinds in name order."""
    found: dict[str, tuple[str, int]] = {}
    for category in counts:
        for row in category.rows:
            collection, n = found.get(row.kind, (category.collection, 0))
            found[row.kind] = (collection, n + row.n)
    return dict(sorted(found.items()))


@dataclass
class KindPage:
    """One page of the person's records of one kind, newest first."""

    kind: str
    total: int
    page: int
    pages: int
    records: list[LatestRecord]

    @property
    def label(self) -> str:
        return kind_label(self.kind)

    @property
    def param(self) -> str:
        return page_param(self.kind)

    @property
    def first_number(self) -> int:
        return (self.page - 1) * PAGE_SIZE + 1 if self.records else 0

    @property
    def last_number(self) -> int:
        return (self.page - 1) * PAGE_SIZE + len(self.records)


def page_param(kind: str) -> str:
    return f"{kind}_page"


def page_number(raw: str | None, pages: int) -> int:
    """The page asked for, within 1..pages (anything else, a word or a huge number: the nearest
    page there is)."""
    try:
        number = int(raw or 1)
    except ValueError:
        return 1
    return min(max(number, 1), max(pages, 1))


def kind_pages(
    *,
    user: AbstractBaseUser,
    kinds: Mapping[str, tuple[str, int]],
    asked: Mapping[str, str],
    zone: tzinfo,
    size: int = PAGE_SIZE,
) -> list[KindPage]:
    """For each kind the person has, the page of its records ``asked`` names (``<kind>_page``;
    the first by default), decrypted: one query per kind on the (user, kind, occurred_at)
    index, reading only that page."""
    result = []
    for kind, (collection, total) in kinds.items():
        pages = max(1, math.ceil(total / size))
        page = page_number(asked.get(page_param(kind)), pages)
        cursor = (
            records_collection(collection)
            .find({"user": user.pk, "kind": kind}, {"raw_page": 0})
            .sort("occurred_at", DESCENDING)
            .skip((page - 1) * size)
            .limit(size)
        )
        records = [
            LatestRecord(
                occurred_at=_aware(document["occurred_at"]).astimezone(zone),
                kind=kind,
                provider=document["provider"],
                details=_details(kind, record_decode(document, owner_id=user.pk)["data"], zone),
            )
            for document in cursor
        ]
        result.append(KindPage(kind=kind, total=total, page=page, pages=pages, records=records))
    return result


def _details(kind: str, data: dict[str, Any], zone: tzinfo) -> list[tuple[str, str]]:
    names = SUMMARY_FIELDS.get(kind)
    if names is None:
        try:
            names = tuple(kind_get(kind).fields)[:FALLBACK_FIELD_COUNT]
        except InvalidItem:  # a kind no longer registered: show what it holds
            names = tuple(data)[:FALLBACK_FIELD_COUNT]
    return [
        (name.replace("_", " "), _shown(data[name], zone))
        for name in names
        if data.get(name) not in (None, "", [])
    ]


def _shown(value: Any, zone: tzinfo) -> str:
    if isinstance(value, datetime):
        return _aware(value).astimezone(zone).strftime("%Y-%m-%d %H:%M")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
