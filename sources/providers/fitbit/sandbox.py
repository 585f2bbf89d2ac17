"""The sandbox's Google Health API (v4): identity, dataPoints list with AIP-160 filters, steps
dailyRollUp, and its webhooks (the subscriber handshake and signed notifications).

Data is generated per account (email) and per civil day in the account's fixed UTC offset, for
the last 120 days up to now, only for the days a request reaches. Listing is newest first with an
opaque page token; int64 values are JSON strings; offsets look like "-18000s"; civil fields are
derived from the offset; only sleep points carry a `name`. Sleep sessions belong to the day they
end on and usually start the evening before.

Filter subset (https://google.aip.dev/160 as the Health API documents it): comparisons with `>=`
and `<` on quoted values joined by AND; OR only for sleep; fields are the snake_case data type
followed by the time field (`steps.interval.start_time`, `heart_rate.sample_time.civil_time`,
`daily_resting_heart_rate.date`, `sleep.interval.end_time`).

Webhooks: the two-probe verification handshake, and notifications carrying the subscriber's
secret in `Authorization` plus an ECDSA P-256 signature over the raw body in Tink's output format
(base64 of 0x01, the 4-byte key id, the DER signature), whose public keys are served as a Tink
JSON keyset at `/sandbox/google/health/webhooks/webhooks_public_keyset.json`. The primary key
rotates through the `key_rotate` webhook control (the previous key stays ENABLED); `keys_disable`
(or the next rotation) DISABLES the keys rotated away from.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST
from tink.proto import common_pb2, ecdsa_pb2

from sources.sandbox.common import (
    fixed_zone,
    json_body,
    json_response,
    opaque_decode,
    opaque_encode,
    parse_iso_date,
    rfc3339,
    seeded_random,
    stable_int,
)
from sources.sandbox.faults import fault_take
from sources.sandbox.google import (
    GoogleCaller,
    api_error,
    error_info,
    google_caller,
    google_quota_caller,
    insufficient_scope,
    rate_limited,
)
from sources.sandbox.keys import private_key_of, signing_key_stored
from sources.sandbox.models import GoogleAccount, SigningKey
from sources.sandbox.quotas import Quota
from sources.sandbox.webhooks import (
    WebhookInputError,
    deliver,
    flag,
    json_bytes,
    post_once,
    text,
)

SERVICE = "health.googleapis.com"
HISTORY_DAYS = 120
SCOPE_PREFIX = "https://www.googleapis.com/auth/googlehealth."
# Accounts are Google accounts: faults address the family.
FAMILY = "google"

scope_words = {
    f"{SCOPE_PREFIX}activity_and_fitness": "See your Google Health activity and fitness data",
    f"{SCOPE_PREFIX}health_metrics_and_measurements": (
        "See your Google Health health metrics and measurement data"
    ),
    f"{SCOPE_PREFIX}sleep": "See your Google Health sleep data",
    f"{SCOPE_PREFIX}profile": "See your Google Health profile data",
    f"{SCOPE_PREFIX}settings": "See your Google Health settings",
}
_OFFSETS = [-18000, -21600, -25200, -28800, -14400, 0, 3600, 7200, 19800, 32400]
_DEVICE = {
    "recordingMethod": "PASSIVELY_MEASURED",
    "platform": "FITBIT",
    "device": {"manufacturer": "Fitbit", "displayName": "Charge 6", "formFactor": "FITNESS_BAND"},
}
_SOURCE_FAMILIES = {"all-sources", "google-wearables", "google-sources", "self-sources"}


@dataclass(frozen=True)
class HealthAccount:
    email: str
    health_user_id: str
    legacy_user_id: str
    offset: int

    @classmethod
    def of(cls, email: str) -> HealthAccount:
        number = stable_int("health-user", email)
        legacy = "".join(
            "23456789BCDFGHJKLMNPQRSTVWXYZ"[(number >> (5 * i)) % 29] for i in range(6)
        )
        return cls(
            email=email,
            health_user_id=str(10**18 + number % (9 * 10**18)),
            legacy_user_id=legacy,
            offset=_OFFSETS[number % len(_OFFSETS)],
        )

    @property
    def zone(self) -> tzinfo:
        return fixed_zone(self.offset)

    @property
    def offset_text(self) -> str:
        return f"{self.offset}s"

    def today(self) -> date:
        return timezone.now().astimezone(self.zone).date()

    def midnight(self, day: date) -> datetime:
        return datetime(day.year, day.month, day.day, tzinfo=self.zone)


@dataclass
class Point:
    """One data point: its sort key, the values filters compare, and the JSON body."""

    start: datetime
    uid: str
    values: dict[str, Any]
    body: dict

    @property
    def key(self) -> tuple[int, str]:
        return (int(self.start.timestamp()), self.uid)


def _civil(moment: datetime, zone: tzinfo) -> dict:
    local = moment.astimezone(zone)
    time = {"hours": local.hour, "minutes": local.minute}
    if local.second:
        time["seconds"] = local.second
    return {"date": {"year": local.year, "month": local.month, "day": local.day}, "time": time}


def _naive_local(moment: datetime, zone: tzinfo) -> datetime:
    return moment.astimezone(zone).replace(tzinfo=None)


def _interval(account: HealthAccount, start: datetime, end: datetime) -> dict:
    return {
        "startTime": rfc3339(start),
        "startUtcOffset": account.offset_text,
        "endTime": rfc3339(end),
        "endUtcOffset": account.offset_text,
        "civilStartTime": _civil(start, account.zone),
        "civilEndTime": _civil(end, account.zone),
    }


def _interval_values(prefix: str, account: HealthAccount, start: datetime) -> dict[str, Any]:
    return {
        f"{prefix}.interval.start_time": start,
        f"{prefix}.interval.civil_start_time": _naive_local(start, account.zone),
    }


# --- Generators: one civil day each, only what has already ended ----------------------------------


def _steps_day(account: HealthAccount, day: date, now: datetime) -> list[Point]:
    rng = seeded_random("health-steps", account.email, day.toordinal())
    midnight = account.midnight(day)
    points = []
    for quarter in range(28, 92):  # 07:00 to 23:00, the hours the tracker is worn
        start = midnight + timedelta(minutes=15 * quarter)
        busy = rng.random()
        # A worn tracker reports true zeros for still quarters.
        count = 0 if busy < 0.2 else rng.randint(15, 400 if busy < 0.85 else 2200)
        end = start + timedelta(minutes=15)
        if end > now:
            break
        points.append(
            Point(
                start,
                f"steps-{quarter}",
                _interval_values("steps", account, start),
                {
                    "dataSource": _DEVICE,
                    "steps": {"interval": _interval(account, start, end), "count": str(count)},
                },
            )
        )
    return points


def _active_minutes_day(account: HealthAccount, day: date, now: datetime) -> list[Point]:
    rng = seeded_random("health-active", account.email, day.toordinal())
    midnight = account.midnight(day)
    points = []
    for hour in range(7, 22):
        light, moderate, vigorous = rng.randint(0, 35), rng.randint(0, 15), rng.randint(0, 10)
        # Most hours have no moderate or vigorous minutes at all.
        moderate = moderate if moderate > 8 else 0
        vigorous = vigorous if vigorous > 7 else 0
        start = midnight + timedelta(hours=hour)
        end = start + timedelta(hours=1)
        if end > now:
            break
        if not (light or moderate or vigorous):
            continue
        levels = [
            {"activityLevel": name, "activeMinutes": str(minutes)}
            for name, minutes in (("LIGHT", light), ("MODERATE", moderate), ("VIGOROUS", vigorous))
            if minutes
        ]
        points.append(
            Point(
                start,
                f"active-{hour}",
                _interval_values("active_minutes", account, start),
                {
                    "dataSource": {**_DEVICE, "recordingMethod": "DERIVED"},
                    "activeMinutes": {
                        "interval": _interval(account, start, end),
                        "activeMinutesByActivityLevel": levels,
                    },
                },
            )
        )
    return points


def _heart_rate_day(account: HealthAccount, day: date, now: datetime) -> list[Point]:
    rng = seeded_random("health-hr", account.email, day.toordinal())
    midnight = account.midnight(day)
    resting = 52 + stable_int("health-rest", account.email) % 14
    workout = rng.randint(16 * 12, 20 * 12)
    points = []
    for slot in range(288):  # every five minutes
        at = midnight + timedelta(minutes=5 * slot)
        bpm = resting + (rng.randint(0, 6) if slot < 6 * 12 else rng.randint(8, 40))
        if workout <= slot < workout + 8:
            bpm += rng.randint(40, 70)
        if at > now:
            break
        points.append(
            Point(
                at,
                f"hr-{slot}",
                {
                    "heart_rate.sample_time.physical_time": at,
                    "heart_rate.sample_time.civil_time": _naive_local(at, account.zone),
                },
                {
                    "dataSource": _DEVICE,
                    "heartRate": {
                        "sampleTime": {
                            "physicalTime": rfc3339(at),
                            "utcOffset": account.offset_text,
                            "civilTime": _civil(at, account.zone),
                        },
                        "beatsPerMinute": str(bpm),
                    },
                },
            )
        )
    return points


def _resting_day(account: HealthAccount, day: date, now: datetime) -> list[Point]:
    rng = seeded_random("health-resting", account.email, day.toordinal())
    if day >= account.today() or rng.random() < 0.08:  # computed once a day is over; not worn
        return []
    bpm = 52 + stable_int("health-rest", account.email) % 14 + rng.randint(-3, 3)
    return [
        Point(
            account.midnight(day),
            "resting",
            {"daily_resting_heart_rate.date": day},
            {
                "dataSource": {**_DEVICE, "recordingMethod": "DERIVED"},
                "dailyRestingHeartRate": {
                    "date": {"year": day.year, "month": day.month, "day": day.day},
                    "beatsPerMinute": str(bpm),
                    "dailyRestingHeartRateMetadata": {"calculationMethod": "WITH_SLEEP"},
                },
            },
        )
    ]


def _sleep_day(account: HealthAccount, day: date, now: datetime) -> list[Point]:
    """The night that ends on `day`: starts 22:00-00:30 the evening before, 6-8.5 hours."""
    rng = seeded_random("health-sleep", account.email, day.toordinal())
    if rng.random() < 0.05:
        return []
    start = account.midnight(day) - timedelta(hours=2) + timedelta(minutes=rng.randint(0, 150))
    end = start + timedelta(minutes=rng.randint(360, 510))
    if end > now:
        return []
    stages = []
    cursor = start
    cycle = ["LIGHT", "DEEP", "LIGHT", "REM"]
    index = 0
    while cursor < end:
        kind = "AWAKE" if rng.random() < 0.12 else cycle[index % len(cycle)]
        length = rng.randint(2, 9) if kind == "AWAKE" else rng.randint(10, 40)
        stage_end = min(end, cursor + timedelta(minutes=length))
        stages.append((kind, cursor, stage_end))
        cursor = stage_end
        index += 1
    totals: dict[str, list[int]] = {}
    for kind, s, e in stages:
        entry = totals.setdefault(kind, [0, 0])
        entry[0] += int((e - s).total_seconds() // 60)
        entry[1] += 1
    awake = totals.get("AWAKE", [0, 0])[0]
    in_period = int((end - start).total_seconds() // 60)
    uid = f"{stable_int('health-sleep-id', account.email, day.toordinal()) % 16**16:016x}"
    return [
        Point(
            start,
            uid,
            {
                "sleep.interval.end_time": end,
                "sleep.interval.civil_end_time": _naive_local(end, account.zone),
            },
            {
                "name": f"users/{account.health_user_id}/dataTypes/sleep/dataPoints/{uid}",
                "dataSource": _DEVICE,
                "sleep": {
                    "interval": _interval(account, start, end),
                    "type": "STAGES",
                    "stages": [
                        {
                            "type": kind,
                            "startTime": rfc3339(s),
                            "startUtcOffset": account.offset_text,
                            "endTime": rfc3339(e),
                            "endUtcOffset": account.offset_text,
                        }
                        for kind, s, e in stages
                    ],
                    "summary": {
                        "minutesInSleepPeriod": str(in_period),
                        "minutesAsleep": str(in_period - awake),
                        "minutesAwake": str(awake),
                        "minutesToFallAsleep": "0",
                        "minutesAfterWakeUp": "0",
                        "stagesSummary": [
                            {"type": kind, "minutes": str(m), "count": str(c)}
                            for kind, (m, c) in sorted(totals.items())
                        ],
                    },
                    "metadata": {
                        "mainSleep": True,
                        "nap": False,
                        "processed": True,
                        "stagesStatus": "SUCCEEDED",
                    },
                },
            },
        )
    ]


@dataclass(frozen=True)
class DataType:
    name: str
    prefix: str
    payload_key: str
    family: str
    fields: dict[str, str]  # filter field -> value kind: time | civil | date
    default_page: int
    max_page: int
    generate: Callable[[HealthAccount, date, datetime], list[Point]]
    allows_or: bool = False


DATA_TYPES = {
    t.name: t
    for t in (
        DataType(
            "steps",
            "steps",
            "steps",
            "activity_and_fitness",
            {"steps.interval.start_time": "time", "steps.interval.civil_start_time": "civil"},
            1440,
            10000,
            _steps_day,
        ),
        DataType(
            "active-minutes",
            "active_minutes",
            "activeMinutes",
            "activity_and_fitness",
            {
                "active_minutes.interval.start_time": "time",
                "active_minutes.interval.civil_start_time": "civil",
            },
            1440,
            10000,
            _active_minutes_day,
        ),
        DataType(
            "heart-rate",
            "heart_rate",
            "heartRate",
            "health_metrics_and_measurements",
            {
                "heart_rate.sample_time.physical_time": "time",
                "heart_rate.sample_time.civil_time": "civil",
            },
            1440,
            10000,
            _heart_rate_day,
        ),
        DataType(
            "daily-resting-heart-rate",
            "daily_resting_heart_rate",
            "dailyRestingHeartRate",
            "health_metrics_and_measurements",
            {"daily_resting_heart_rate.date": "date"},
            1440,
            10000,
            _resting_day,
        ),
        DataType(
            "sleep",
            "sleep",
            "sleep",
            "sleep",
            {"sleep.interval.end_time": "time", "sleep.interval.civil_end_time": "civil"},
            25,
            25,
            _sleep_day,
            allows_or=True,
        ),
    )
}


# --- Filters --------------------------------------------------------------------------------------


class FilterError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


_TOKEN = re.compile(
    r'\s*(\(|\)|>=|<=|!=|=|<|>|"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|[^\s()<>=!]+)'
)


def _tokens(text: str) -> list[str]:
    tokens, pos = [], 0
    text = text.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match:
            raise FilterError("INVALID_FILTER_FORMAT", f"Cannot parse filter at: {text[pos:]}")
        tokens.append(match.group(1))
        pos = match.end()
    return tokens


def _value(kind: str, raw: str) -> Any:
    try:
        if kind == "date":
            return date.fromisoformat(raw)
        if kind == "civil":
            return (
                datetime.fromisoformat(raw)
                if "T" in raw
                else datetime.fromisoformat(raw + "T00:00:00")
            )
        moment = datetime.fromisoformat(raw)
    except ValueError as err:
        raise FilterError("INVALID_DATA_POINT_FILTER", f"Invalid value {raw!r}") from err
    if kind == "civil" and moment.tzinfo is not None:
        raise FilterError("INVALID_DATA_POINT_FILTER", f"Civil time {raw!r} takes no offset")
    if kind == "time" and moment.tzinfo is None:
        raise FilterError("INVALID_DATA_POINT_FILTER", f"Time {raw!r} needs Z or an offset")
    return moment


class _Parser:
    def __init__(self, data_type: DataType, tokens: list[str]) -> None:
        self.data_type = data_type
        self.tokens = tokens
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise FilterError("INVALID_FILTER_FORMAT", "Unexpected end of filter")
        self.pos += 1
        return token

    def parse(self) -> tuple:
        node = self.conjunction()
        if self.peek() is not None:
            raise FilterError("INVALID_FILTER_FORMAT", f"Unexpected {self.peek()!r}")
        return node

    def conjunction(self) -> tuple:
        parts = [self.disjunction()]
        while self.peek() == "AND":
            self.take()
            parts.append(self.disjunction())
        return ("and", parts) if len(parts) > 1 else parts[0]

    def disjunction(self) -> tuple:
        parts = [self.term()]
        while self.peek() == "OR":
            if not self.data_type.allows_or:
                raise FilterError(
                    "INVALID_DATA_POINT_FILTER", f"OR is not supported for {self.data_type.name}"
                )
            self.take()
            parts.append(self.term())
        return ("or", parts) if len(parts) > 1 else parts[0]

    def term(self) -> tuple:
        if self.peek() == "(":
            self.take()
            node = self.conjunction()
            if self.take() != ")":
                raise FilterError("INVALID_FILTER_FORMAT", "Missing ')'")
            return node
        field, op, raw = self.take(), self.take(), self.take()
        kind = self.data_type.fields.get(field)
        if kind is None:
            allowed = ", ".join(self.data_type.fields)
            raise FilterError(
                "INVALID_DATA_POINT_FILTER",
                f"Field {field!r} cannot be filtered on for {self.data_type.name}; use {allowed}",
            )
        if op not in (">=", "<"):
            raise FilterError("INVALID_DATA_POINT_FILTER", f"Operator {op!r} is not supported")
        if len(raw) < 2 or raw[0] not in "\"'" or raw[-1] != raw[0]:
            raise FilterError("INVALID_FILTER_FORMAT", f"Value {raw!r} must be quoted")
        return ("cmp", field, op, _value(kind, raw[1:-1]))


def filter_parse(data_type: DataType, text: str) -> tuple | None:
    if not text.strip():
        return None
    return _Parser(data_type, _tokens(text)).parse()


def _matches(node: tuple | None, point: Point) -> bool:
    if node is None:
        return True
    if node[0] == "and":
        return all(_matches(n, point) for n in node[1])
    if node[0] == "or":
        return any(_matches(n, point) for n in node[1])
    _, field, op, value = node
    actual = point.values[field]
    return actual >= value if op == ">=" else actual < value


def _local_date(value: Any, zone: tzinfo) -> date:
    if isinstance(value, datetime):
        return value.astimezone(zone).date() if value.tzinfo else value.date()
    return value


def _bounds(node: tuple | None, zone: tzinfo) -> tuple[date | None, date | None]:
    """The civil days a filter can match, loosely: generation reads only those."""
    if node is None:
        return None, None
    if node[0] == "cmp":
        day = _local_date(node[3], zone)
        return (day, None) if node[2] == ">=" else (None, day)
    children = [_bounds(n, zone) for n in node[1]]
    los = [lo for lo, _ in children]
    his = [hi for _, hi in children]
    if node[0] == "and":
        lo = max((d for d in los if d), default=None)
        hi = min((d for d in his if d), default=None)
        return lo, hi
    lo = None if None in los else min(los)
    hi = None if None in his else max(his)
    return lo, hi


# --- Views ----------------------------------------------------------------------------------------


def _invalid(message: str, reason: str = "INVALID_ARGUMENT") -> HttpResponse:
    return api_error(
        400,
        message,
        "INVALID_ARGUMENT",
        reason="badRequest",
        details=[error_info(reason, SERVICE, domain=SERVICE)],
    )


# The Google Health API's quotas (https://developers.google.com/health/rate-limits): requests
# per minute per user and per project, each answered 429 RESOURCE_EXHAUSTED when spent.
quotas = [
    Quota("user", "account", 300, 60, lambda q: rate_limited(SERVICE, retry_after=False)),
    Quota("project", "app", 120_000, 60, lambda q: rate_limited(SERVICE, retry_after=False)),
]
quota_caller = google_quota_caller


def _caller(request: HttpRequest, user: str) -> tuple[GoogleCaller, HealthAccount] | HttpResponse:
    caller = google_caller(request, SERVICE, server_error_status=503)
    if isinstance(caller, HttpResponse):
        return caller
    account = HealthAccount.of(caller.email)
    if user not in ("me", account.health_user_id):
        return api_error(
            403, "The caller does not have permission", "PERMISSION_DENIED", reason="forbidden"
        )
    return caller, account


def _family_scopes(family: str) -> tuple[str]:
    # Reads need the family's `.readonly` scope: on 2026-05-26 Google renamed the suffix-less
    # read/write scopes to `.writeonly`, which does not read
    # (https://developers.google.com/health/release-notes).
    return (f"{SCOPE_PREFIX}{family}.readonly",)


@csrf_exempt
@require_GET
def identity(request: HttpRequest, user: str) -> HttpResponse:
    checked = _caller(request, user)
    if isinstance(checked, HttpResponse):
        return checked
    caller, account = checked
    if not any(s.startswith(SCOPE_PREFIX) for s in caller.scopes):
        return insufficient_scope(SERVICE)
    return json_response(
        {
            "name": f"users/{account.health_user_id}/identity",
            "healthUserId": account.health_user_id,
            "legacyUserId": account.legacy_user_id,
        }
    )


def _page_size(request: HttpRequest, data_type: DataType) -> int | None:
    raw = request.GET.get("pageSize", "")
    if raw == "":
        return data_type.default_page
    try:
        size = int(raw)
    except ValueError:
        return None
    if size < 0:
        return None
    return min(size, data_type.max_page) if size else data_type.default_page


def _malform(data_type: DataType, points: list[dict]) -> None:
    """Break two points the way real feeds sometimes are: a non-numeric value, a missing time."""
    for index, point in enumerate(points[:2]):
        payload = point[data_type.payload_key]
        if index == 0:
            if data_type.name == "steps":
                payload["count"] = "n/a"
            elif data_type.name == "active-minutes":
                payload["activeMinutesByActivityLevel"][0]["activeMinutes"] = "n/a"
            elif data_type.name == "sleep":
                payload["summary"]["minutesAsleep"] = "n/a"
            else:
                payload["beatsPerMinute"] = "n/a"
        else:
            for key in ("interval", "sampleTime", "date"):
                payload.pop(key, None)


@csrf_exempt
@require_GET
def data_points(request: HttpRequest, user: str, data_type: str) -> HttpResponse:
    """dataPoints.list: newest first, `filter`, `pageSize`, `pageToken`, `dataSourceFamily`."""
    checked = _caller(request, user)
    if isinstance(checked, HttpResponse):
        return checked
    caller, account = checked
    kind = DATA_TYPES.get(data_type)
    if kind is None:
        return api_error(
            404, f"Data type {data_type!r} is not available", "NOT_FOUND", reason="notFound"
        )
    if not caller.has_any_scope(*_family_scopes(kind.family)):
        return insufficient_scope(SERVICE)
    family = request.GET.get("dataSourceFamily", "")
    if family:
        if kind.name == "sleep":
            return _invalid("dataSourceFamily is not supported for sleep")
        if family.removeprefix("users/me/dataSourceFamilies/") not in _SOURCE_FAMILIES:
            return _invalid(f"Invalid dataSourceFamily {family!r}")
    page_size = _page_size(request, kind)
    if page_size is None:
        return _invalid("pageSize must be a non-negative integer")
    filter_text = request.GET.get("filter", "")
    try:
        node = filter_parse(kind, filter_text)
    except FilterError as err:
        return _invalid(f"Invalid filter: {err}", err.reason)
    fingerprint = hashlib.sha256(f"{kind.name}|{filter_text}|{family}".encode()).hexdigest()[:12]
    after: tuple[int, str] | None = None
    token = request.GET.get("pageToken", "")
    if token:
        decoded = opaque_decode(token)
        if not (
            isinstance(decoded, dict)
            and decoded.get("f") == fingerprint
            and isinstance(decoded.get("k"), list)
            and len(decoded["k"]) == 2
            and isinstance(decoded["k"][0], int)
            and 0 <= decoded["k"][0] < 10**11
            and isinstance(decoded["k"][1], str)
        ):
            return _invalid("Invalid page token, or the request changed since it was issued")
        after = (decoded["k"][0], decoded["k"][1])

    now = timezone.now()
    today = account.today()
    oldest = today - timedelta(days=HISTORY_DAYS)
    first, last = oldest, today
    try:
        lo, hi = _bounds(node, account.zone)
        first = max(oldest, lo - timedelta(days=1)) if lo else oldest
        last = min(today, hi + timedelta(days=1)) if hi else today
    except OverflowError:
        pass  # a bound at the edge of the calendar: read every kept day, the filter still applies
    if after is not None:
        resume = datetime.fromtimestamp(after[0], tz=UTC).astimezone(account.zone).date()
        last = min(last, resume + timedelta(days=1))
    points: list[Point] = []
    more = False
    if not family.endswith("self-sources"):  # the sandbox app wrote nothing itself
        day = last
        while day >= first and not more:
            for point in sorted(
                kind.generate(account, day, now), key=lambda p: p.key, reverse=True
            ):
                if after is not None and point.key >= after:
                    continue
                if not _matches(node, point):
                    continue
                if len(points) == page_size:
                    more = True
                    break
                points.append(point)
            day -= timedelta(days=1)
    bodies = [p.body for p in points]
    if bodies and fault_take(FAMILY, caller.email, "malformed", caller.pending_faults):
        bodies = copy.deepcopy(bodies)
        _malform(kind, bodies)
    next_token = opaque_encode({"k": list(points[-1].key), "f": fingerprint}) if more else ""
    return json_response({"dataPoints": bodies, "nextPageToken": next_token})


def _civil_date(value: Any) -> date | None:
    """A CivilDateTime's date, when it is at midnight (windows must align to days)."""
    if not isinstance(value, dict) or not isinstance(value.get("date"), dict):
        return None
    time = value.get("time") or {}
    if not isinstance(time, dict) or any(time.get(k) for k in ("hours", "minutes", "seconds")):
        return None
    parts = value["date"]
    try:
        return date(int(parts["year"]), int(parts["month"]), int(parts["day"]))
    except (KeyError, TypeError, ValueError):
        return None


@csrf_exempt
@require_POST
def daily_roll_up(request: HttpRequest, user: str, data_type: str) -> HttpResponse:
    """dataPoints:dailyRollUp for steps: `countSum` per window of civil days, oldest first."""
    checked = _caller(request, user)
    if isinstance(checked, HttpResponse):
        return checked
    caller, account = checked
    kind = DATA_TYPES.get(data_type)
    if kind is None or kind.name != "steps":
        return _invalid(f"dailyRollUp is not available for {data_type!r} in the sandbox")
    if not caller.has_any_scope(*_family_scopes(kind.family)):
        return insufficient_scope(SERVICE)
    body = json_body(request)
    span = (body or {}).get("range")
    if not isinstance(span, dict):
        return _invalid("range is required")
    start, end = _civil_date(span.get("start")), _civil_date(span.get("end"))
    if start is None or end is None or end <= start:
        return _invalid("range must have aligned civil start and end dates, start before end")
    if (end - start).days > 90:
        return _invalid("The maximum range for steps is 90 days")
    window = body.get("windowSizeDays", 1)
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:
        return _invalid("windowSizeDays must be a positive integer")
    now = timezone.now()
    rollups = []
    cursor = start
    while cursor < end:
        stop = min(end, cursor + timedelta(days=window))
        total = 0
        day = cursor
        while day < stop:
            total += sum(int(p.body["steps"]["count"]) for p in _steps_day(account, day, now))
            day += timedelta(days=1)
        rollups.append(
            {
                "civilStartTime": {
                    "date": {"year": cursor.year, "month": cursor.month, "day": cursor.day}
                },
                "civilEndTime": {"date": {"year": stop.year, "month": stop.month, "day": stop.day}},
                "steps": {"countSum": str(total)},
            }
        )
        cursor = stop
    return json_response({"rollupDataPoints": rollups})


# --- Webhooks -------------------------------------------------------------------------------------

HEALTH_KEY_PURPOSE = "google-health-webhook"
HEALTH_VERIFIER_USER_AGENT = "Google-Health-API-Webhooks-Verifier"
# Both names appear in Google's documents; a receiver should accept either.
HEALTH_SIGNATURE_HEADERS = ("X-HEALTHAPI-SIGNATURE", "GOOGLE-HEALTH-API-SIGNATURE")
# Google's keyset lists the signing key and the keys it rotated away from: a rotated-away key
# stays ENABLED (notifications it signed may still be retried) until it is DISABLED. The
# SigningKey purpose says which: the primary key has HEALTH_KEY_PURPOSE itself.
_ENABLED = f"{HEALTH_KEY_PURPOSE}:enabled:"
_DISABLED = f"{HEALTH_KEY_PURPOSE}:disabled:"
TINK_PREFIX = b"\x01"  # Tink's TINK output prefix: this byte, then the 4-byte key id
_ECDSA_PUBLIC_KEY_TYPE = "type.googleapis.com/google.crypto.tink.EcdsaPublicKey"


def health_key_id(stored: SigningKey) -> int:
    """The Tink key id (uint32) of a stored key, derived from its kid."""
    return int.from_bytes(hashlib.sha256(stored.kid.encode()).digest()[:4], "big") or 1


def _health_primary() -> SigningKey:
    return signing_key_stored(HEALTH_KEY_PURPOSE, "ec")


def health_signing_key() -> tuple[int, ec.EllipticCurvePrivateKey]:
    """The primary P-256 key for Google Health notification signatures: (Tink key id, key)."""
    stored = _health_primary()
    private = private_key_of(stored)
    if not isinstance(private, ec.EllipticCurvePrivateKey):
        raise TypeError("the stored Google Health key is not an EC key")
    return health_key_id(stored), private


def health_key_rotate() -> int:
    """A new primary key (its Tink key id). The old primary stays in the keyset, ENABLED; a key
    rotated away from earlier becomes DISABLED (the further step of Google's rotation)."""
    health_keys_disable()
    current = _health_primary()
    # Conditional, so two concurrent rotations move the old key only once.
    SigningKey.objects.filter(pk=current.pk, purpose=HEALTH_KEY_PURPOSE).update(
        purpose=f"{_ENABLED}{current.kid}"
    )
    return health_key_id(_health_primary())


def health_keys_disable() -> list[int]:
    """DISABLE every key rotated away from (their signatures stop verifying); their key ids."""
    disabled = []
    for stored in SigningKey.objects.filter(purpose__startswith=_ENABLED):
        moved = SigningKey.objects.filter(pk=stored.pk, purpose=stored.purpose).update(
            purpose=f"{_DISABLED}{stored.kid}", expired_at=timezone.now()
        )
        if moved:
            disabled.append(health_key_id(stored))
    return disabled


def _tink_public_key(stored: SigningKey) -> str:
    """The key's public half as Tink's serialized EcdsaPublicKey proto, base64."""
    private = private_key_of(stored)
    if not isinstance(private, ec.EllipticCurvePrivateKey):
        raise TypeError("the stored Google Health key is not an EC key")
    numbers = private.public_key().public_numbers()
    public = ecdsa_pb2.EcdsaPublicKey(
        version=0,
        params=ecdsa_pb2.EcdsaParams(
            hash_type=common_pb2.HashType.SHA256,
            curve=common_pb2.EllipticCurveType.NIST_P256,
            encoding=ecdsa_pb2.EcdsaSignatureEncoding.DER,
        ),
        x=numbers.x.to_bytes(32, "big"),
        y=numbers.y.to_bytes(32, "big"),
    )
    return base64.b64encode(public.SerializeToString()).decode()


def health_public_keyset() -> dict:
    """The public keyset in Tink's JSON format, as Google serves it: every key, with status."""
    primary = _health_primary()
    keys = [primary, *SigningKey.objects.filter(purpose__startswith=f"{HEALTH_KEY_PURPOSE}:")]
    return {
        "primaryKeyId": health_key_id(primary),
        "key": [
            {
                "keyData": {
                    "typeUrl": _ECDSA_PUBLIC_KEY_TYPE,
                    "value": _tink_public_key(stored),
                    "keyMaterialType": "ASYMMETRIC_PUBLIC",
                },
                "status": "DISABLED" if stored.purpose.startswith(_DISABLED) else "ENABLED",
                "keyId": health_key_id(stored),
                "outputPrefixType": "TINK",
            }
            for stored in keys
        ],
    }


def health_verification_probe(url: str, secret: str) -> tuple[int, int]:
    """The subscriber handshake: (status with the secret, status without it).

    A subscriber passes with 201 (or 200) and then 401 (or 403). 0 means no answer.
    """
    body = json_bytes({"type": "verification"})
    headers = {"Content-Type": "application/json", "User-Agent": HEALTH_VERIFIER_USER_AGENT}
    with_secret = post_once(url, body, {**headers, "Authorization": secret})
    without_secret = post_once(url, body, headers)
    return with_secret, without_secret


def _health_offset(health_user_id: str) -> int:
    """The UTC offset (seconds) of the sandbox account behind a healthUserId; 0 if unknown."""
    for email in GoogleAccount.objects.values_list("email", flat=True):
        account = HealthAccount.of(email)
        if account.health_user_id == health_user_id:
            return account.offset
    return 0


def _civil_date_time(day: date) -> dict:
    return {
        "date": {"year": day.year, "month": day.month, "day": day.day},
        "time": {"hours": 0, "minutes": 0},
    }


def health_notification_body(
    health_user_id: str,
    data_type: str,
    intervals: list[tuple[str, str]],
    *,
    operation: str = "UPSERT",
    subscription_name: str = "sibling-sandbox",
    utc_offset_s: int | None = None,
) -> dict:
    """A Google Health notification for whole civil days.

    Each interval is (first_day, last_day), "YYYY-MM-DD", inclusive; it becomes the days' civil
    span (midnight to the midnight after the last day) and the physical span in the user's UTC
    offset (`utc_offset_s`, by default the sandbox account's, else UTC).
    """
    offset = _health_offset(health_user_id) if utc_offset_s is None else utc_offset_s
    rendered = []
    for pair in intervals:
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise WebhookInputError("each interval is a (first_day, last_day) pair")
        first, last = parse_iso_date(str(pair[0])), parse_iso_date(str(pair[1]))
        if first is None or last is None or last < first:
            raise WebhookInputError(f"bad interval {pair!r}: two YYYY-MM-DD days, in order")
        end = last + timedelta(days=1)
        zone = timedelta(seconds=offset)
        start_utc = datetime(first.year, first.month, first.day, tzinfo=UTC) - zone
        end_utc = datetime(end.year, end.month, end.day, tzinfo=UTC) - zone
        rendered.append(
            {
                "physicalTimeInterval": {
                    "startTime": rfc3339(start_utc),
                    "endTime": rfc3339(end_utc),
                },
                "civilDateTimeInterval": {
                    "startDateTime": _civil_date_time(first),
                    "endDateTime": _civil_date_time(end),
                },
                "civilIso8601TimeInterval": {
                    "startTime": f"{first.isoformat()}T00:00:00",
                    "endTime": f"{end.isoformat()}T00:00:00",
                },
            }
        )
    return {
        "data": {
            "version": "1",
            "clientProvidedSubscriptionName": subscription_name,
            "healthUserId": health_user_id,
            "operation": operation,
            "dataType": data_type,
            "intervals": rendered,
        }
    }


def health_signature(
    body: bytes, key: ec.EllipticCurvePrivateKey | None = None, key_id: int | None = None
) -> str:
    """Base64 of Tink's output over the raw body: 0x01, the 4-byte key id, the DER ECDSA P-256
    SHA-256 signature. By default the primary key signs."""
    if key is None:
        primary_id, key = health_signing_key()
        key_id = primary_id if key_id is None else key_id
    elif key_id is None:
        raise ValueError("a key of the caller's own needs its key id")
    der = key.sign(body, ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(TINK_PREFIX + key_id.to_bytes(4, "big") + der).decode()


def health_webhook_send(
    url: str,
    secret: str | None,
    body: dict | list,
    *,
    signature_header: str | None = "X-HEALTHAPI-SIGNATURE",
    duplicate: bool = False,
    retry_delays: Sequence[float] | None = None,
) -> list[int]:
    """POST a Google Health notification (or a batch, as a list) with secret and signature.

    `secret` goes in `Authorization` as is (None: no header); `signature_header` names the header
    that carries the signature (None: unsigned).
    """
    raw = json_bytes(body)
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["Authorization"] = secret
    if signature_header:
        headers[signature_header] = health_signature(raw)
    return deliver(url, raw, headers, duplicate=duplicate, retry_delays=retry_delays)


@require_GET
def health_keyset(request: HttpRequest) -> HttpResponse:
    """The Google Health notification public keyset, Tink's JSON format."""
    return json_response(health_public_keyset())


def _control_secret(body: dict) -> str | None:
    secret = body.get("secret", getattr(settings, "FITBIT_WEBHOOK_SECRET", None))
    if secret is not None and not isinstance(secret, str):
        raise WebhookInputError("secret must be a string")
    return secret


def _control_notification(body: dict, url: str) -> dict:
    """`secret` (the Authorization value; default settings.FITBIT_WEBHOOK_SECRET), `email` or
    `health_user_id`, `data_type` (default "steps"), `intervals` (list of [first_day, last_day],
    "YYYY-MM-DD"; default today), `operation` ("UPSERT" or "DELETE"), `signature_header`
    ("X-HEALTHAPI-SIGNATURE" (default), "GOOGLE-HEALTH-API-SIGNATURE" or null for unsigned),
    `batch` (bool: send a one-element array), `duplicate` (bool)."""
    secret = _control_secret(body)
    health_user_id = body.get("health_user_id")
    if health_user_id is None:
        health_user_id = HealthAccount.of(text(body, "email").lower()).health_user_id
    if not isinstance(health_user_id, str) or not health_user_id:
        raise WebhookInputError("health_user_id must be a non-empty string")
    intervals = body.get("intervals")
    if intervals is None:
        today = timezone.now().date().isoformat()
        intervals = [[today, today]]
    if not isinstance(intervals, list) or not intervals:
        raise WebhookInputError("intervals must be a non-empty list of [first_day, last_day]")
    operation = text(body, "operation", "UPSERT")
    if operation not in ("UPSERT", "DELETE"):
        raise WebhookInputError("operation must be UPSERT or DELETE")
    notification = health_notification_body(
        health_user_id, text(body, "data_type", "steps"), intervals, operation=operation
    )
    header = body.get("signature_header", HEALTH_SIGNATURE_HEADERS[0])
    if header is not None and header not in HEALTH_SIGNATURE_HEADERS:
        raise WebhookInputError(
            f"signature_header must be one of {', '.join(HEALTH_SIGNATURE_HEADERS)} or null"
        )
    statuses = health_webhook_send(
        url,
        secret,
        [notification] if flag(body, "batch") else notification,
        signature_header=header,
        duplicate=flag(body, "duplicate"),
    )
    return {"statuses": statuses}


def _control_verification(body: dict, url: str) -> dict:
    """The two-probe handshake with `secret` (default settings.FITBIT_WEBHOOK_SECRET)."""
    secret = _control_secret(body)
    if not secret:
        raise WebhookInputError("secret is required for the verification handshake")
    with_secret, without_secret = health_verification_probe(url, secret)
    return {"statuses": [with_secret, without_secret]}


def _control_key_rotate(body: dict, url: str) -> dict:
    """A new primary signing key; the one before stays enabled, any older one is disabled."""
    return {"primary_key_id": health_key_rotate()}


def _control_keys_disable(body: dict, url: str) -> dict:
    """Disable the keys rotated away from: what they signed no longer verifies."""
    return {"disabled_key_ids": health_keys_disable()}


webhook_controls = {
    "notification": _control_notification,
    "verification": _control_verification,
    "key_rotate": _control_key_rotate,
    "keys_disable": _control_keys_disable,
}


_API = "google/health/v4/users/<str:user>"

urlpatterns = [
    path(f"{_API}/identity", identity, name="health-identity"),
    path(f"{_API}/dataTypes/<str:data_type>/dataPoints", data_points, name="health-data-points"),
    path(
        f"{_API}/dataTypes/<str:data_type>/dataPoints:dailyRollUp",
        daily_roll_up,
        name="health-daily-roll-up",
    ),
    path(
        "google/health/webhooks/webhooks_public_keyset.json",
        health_keyset,
        name="health-webhook-keyset",
    ),
]
