"""Google Calendar API v3, imitated for development and tests (mounted only with the sandbox).

What it serves, from https://developers.google.com/workspace/calendar/api/v3/reference and the
sync and push guides:

- ``GET users/me/calendarList``: three calendars per account (the primary one, whose id is the
  account's address, a shared family calendar and a public holiday calendar), paged; an entry
  marked ``hidden`` or ``deleted`` is listed only with ``showHidden`` / ``showDeleted``.
- ``GET calendars/{calendarId}/events``: deterministic events per account and calendar (timed
  events in the calendar's zone, all-day events with an exclusive end date, a weekly recurring
  series with one moved and one cancelled instance), paged by opaque page tokens; the last page
  carries ``nextSyncToken``. ``singleEvents=true`` expands the series into instances
  (``recurringEventId``, ``originalStartTime``), false returns the series and its exceptions.
  ``showDeleted`` shows cancelled events. ``syncToken`` returns what changed since the token
  (cancelled events carry only their id, or their series and original start), refuses the
  parameters the guide forbids with it (400), and answers 410 ``fullSyncRequired`` when the
  ``full_sync_required`` fault is on or the token is not one it issued.
- ``POST calendars/{calendarId}/events/watch`` and ``POST channels/stop``: channels with the
  caller's id and token; the ``sync`` message is sent to the channel's address as the channel
  opens, ``exists`` when events change (rising, non-contiguous message numbers), all through the
  sandbox's shared delivery.

Changes come from activity steps: the ``new_events`` fault adds ``count`` steps (each creates
two events, changes one and cancels one on the primary calendar), then notifies the account's
live channels. Other faults: the shared ``rate_limit`` (429), ``server_error`` (500),
``malformed`` (the next events page carries a broken item) and ``revoke``; ``user_rate_limit``
(403 ``userRateLimitExceeded``, as Calendar documents its per-user limit) and
``full_sync_required``. ``POST /sandbox/_webhooks`` with ``{"provider": "google_calendar",
"action": "notify", "email": ...}`` sends a notification to the account's channels (optionally
``state``, ``channel_id``, ``token``, ``duplicate``).

Never imported by the provider's production modules.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime
from functools import cached_property
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from sources.sandbox import store
from sources.sandbox.common import (
    json_body,
    json_response,
    opaque_decode,
    opaque_encode,
    rfc3339,
    seeded_random,
    stable_base62,
    stable_int,
)
from sources.sandbox.faults import fault_take
from sources.sandbox.google import (
    GoogleCaller,
    api_error,
    google_account_ensure,
    google_caller,
    google_quota_caller,
    insufficient_scope,
    rate_limited,
)
from sources.sandbox.quotas import Quota
from sources.sandbox.webhooks import WebhookInputError, activity_webhook_send, deliver, text

NAMESPACE = "google_calendar"  # this imitation's records in the sandbox store
SERVICE = "calendar-json.googleapis.com"
API_ROOT = "https://www.googleapis.com/calendar/v3"
SCOPES_LIST = frozenset(
    {
        "https://www.googleapis.com/auth/calendar",
        "https://www.googleapis.com/auth/calendar.readonly",
        "https://www.googleapis.com/auth/calendar.calendarlist.readonly",
    }
)
SCOPES_EVENTS = frozenset(
    {
        "https://www.googleapis.com/auth/calendar",
        "https://www.googleapis.com/auth/calendar.readonly",
        "https://www.googleapis.com/auth/calendar.events.readonly",
        "https://www.googleapis.com/auth/calendar.events",
    }
)
HOLIDAYS = "en.usa#holiday@group.v.calendar.google.com"
# The window of seeded events around the account's creation, in days.
DAYS_BEFORE, DAYS_AFTER = 45, 30
MAX_EVENTS_PAGE, DEFAULT_EVENTS_PAGE = 2500, 250
MAX_LIST_PAGE, DEFAULT_LIST_PAGE = 250, 100
# Channels live at most this long here (Google's own limit is not documented).
MAX_CHANNEL_S = 7 * 24 * 3600
FORBIDDEN_WITH_SYNC_TOKEN = (
    "iCalUID",
    "orderBy",
    "privateExtendedProperty",
    "q",
    "sharedExtendedProperty",
    "timeMin",
    "timeMax",
    "updatedMin",
)
USER_AGENT = "APIs-Google; (+https://developers.google.com/webmasters/APIs-Google.html)"

fault_names = ("new_events", "full_sync_required", "user_rate_limit")
scope_words = {
    "https://www.googleapis.com/auth/calendar.readonly": (
        "See and download any calendar you can access using your Google Calendar"
    ),
}

SUMMARIES = (
    "Dentist",
    "Lunch with Sam",
    "Project review",
    "Gym",
    "1:1 with Alex",
    "Call the bank",
    "Book club",
    "Design critique",
    "Pick up the kids",
    "Yoga",
    "Quarterly planning",
    "Coffee with Priya",
)
PLACES = ("Room 4.12", "Café Lumière, 12 Rue Oberkampf", "Dr. Ruiz, 55 Elm St", "Online")
PEOPLE = ("alex@example.org", "sam@example.net", "priya@example.com", "jo@example.org")
ZONES = ("Europe/Paris", "America/New_York", "Asia/Tokyo", "Europe/London")
HOLIDAY_NAMES = ("New Year's Day", "Memorial Day", "Independence Day", "Labor Day")


def _event_id(*parts: object) -> str:
    """An event id in Google's alphabet (base32hex, lower case), 26 characters."""
    alphabet = "0123456789abcdefghijklmnopqrstuv"
    value = stable_int("event", *parts)
    return "".join(alphabet[(value >> (5 * i)) & 31] for i in range(26))


def _basic(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


# --- The account's calendars and events -------------------------------------------------------


@dataclass
class Account:
    email: str

    @cached_property
    def anchor(self) -> datetime:
        created = google_account_ensure(self.email).created_at
        return created.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)

    @cached_property
    def zone(self) -> str:
        return seeded_random("gcal-zone", self.email).choice(ZONES)

    @cached_property
    def family(self) -> str:
        return f"{stable_base62(26, 'gcal-family', self.email).lower()}@group.calendar.google.com"

    def calendars(self) -> list[dict[str, Any]]:
        """The calendar list entries, primary first."""
        common = {"kind": "calendar#calendarListEntry", "selected": True}
        return [
            {
                **common,
                "etag": f'"{stable_int("gcal-etag", self.email) % 10**16}"',
                "id": self.email,
                "summary": self.email,
                "timeZone": self.zone,
                "accessRole": "owner",
                "primary": True,
                "backgroundColor": "#9fe1e7",
            },
            {
                **common,
                "etag": f'"{stable_int("gcal-etag", self.family) % 10**16}"',
                "id": self.family,
                "summary": "Family",
                "timeZone": self.zone,
                "accessRole": "writer",
                "backgroundColor": "#f691b2",
            },
            {
                **common,
                "etag": f'"{stable_int("gcal-etag", HOLIDAYS) % 10**16}"',
                "id": HOLIDAYS,
                "summary": "Holidays in United States",
                "description": "Holidays and Observances in United States",
                "timeZone": "America/New_York",
                "accessRole": "reader",
                "backgroundColor": "#16a765",
            },
        ]

    def calendar(self, calendar_id: str) -> dict[str, Any] | None:
        if calendar_id == "primary":
            calendar_id = self.email
        return next((c for c in self.calendars() if c["id"] == calendar_id), None)

    # Events: {id: event}, with private keys "_master" (a series) and "_instance" --------------

    def _base(self, calendar_id: str) -> dict[str, dict[str, Any]]:
        events: dict[str, dict[str, Any]] = {}
        created = self.anchor - timedelta(days=DAYS_BEFORE + 5)
        if calendar_id == HOLIDAYS:
            for offset in range(-DAYS_BEFORE, DAYS_AFTER, 17):
                day = (self.anchor + timedelta(days=offset)).date()
                name = HOLIDAY_NAMES[offset % len(HOLIDAY_NAMES)]
                event = self._all_day(calendar_id, _event_id(calendar_id, day), name, day, created)
                event["organizer"] = {
                    "email": calendar_id,
                    "displayName": "Holidays in United States",
                }
                event["creator"] = dict(event["organizer"])
                event["transparency"] = "transparent"
                event["visibility"] = "public"
                events[event["id"]] = event
            return events
        zone = ZoneInfo(self.zone)
        for offset in range(-DAYS_BEFORE, DAYS_AFTER):
            day = (self.anchor + timedelta(days=offset)).date()
            rng = seeded_random("gcal-day", self.email, calendar_id, day.isoformat())
            if calendar_id != self.email and rng.random() > 0.2:
                continue  # the family calendar is quieter
            if offset % 6 == 0:
                name = "Out of office" if calendar_id == self.email else "Grandma's birthday"
                event = self._all_day(
                    calendar_id, _event_id(self.email, calendar_id, day), name, day, created
                )
                events[event["id"]] = event
            if day.weekday() >= 5 and calendar_id == self.email:
                continue
            for slot in range(rng.choice((0, 1, 1, 2))):
                hour = rng.choice((8, 9, 10, 11, 13, 14, 15, 16, 18))
                local = datetime(day.year, day.month, day.day, hour, 0, tzinfo=zone)
                minutes = rng.choice((30, 45, 60, 90))
                event_id = _event_id(self.email, calendar_id, day, slot)
                event = self._timed(calendar_id, event_id, local, minutes, created, rng)
                events[event_id] = event
        if calendar_id == self.email:
            events.update(self._series(calendar_id, created))
        return events

    def _common(self, calendar_id: str, event_id: str, created: datetime) -> dict[str, Any]:
        eid = base64.urlsafe_b64encode(f"{event_id} {calendar_id}".encode()).decode().rstrip("=")
        return {
            "kind": "calendar#event",
            "etag": f'"{stable_int("gcal-event-etag", event_id, 0) % 10**16}"',
            "id": event_id,
            "status": "confirmed",
            "htmlLink": f"https://www.google.com/calendar/event?eid={eid}",
            "created": rfc3339(created),
            "updated": rfc3339(created),
            "creator": {"email": self.email, "self": True},
            "organizer": {"email": calendar_id, "self": calendar_id == self.email},
            "iCalUID": f"{event_id}@google.com",
            "sequence": 0,
            "reminders": {"useDefault": True},
            "eventType": "default",
        }

    def _all_day(
        self, calendar_id: str, event_id: str, summary: str, day: date, created: datetime
    ) -> dict[str, Any]:
        return {
            **self._common(calendar_id, event_id, created),
            "summary": summary,
            "start": {"date": day.isoformat()},
            "end": {"date": (day + timedelta(days=1)).isoformat()},
            "transparency": "transparent",
        }

    def _timed(
        self,
        calendar_id: str,
        event_id: str,
        local: datetime,
        minutes: int,
        created: datetime,
        rng: Any,
    ) -> dict[str, Any]:
        event = {
            **self._common(calendar_id, event_id, created),
            "summary": rng.choice(SUMMARIES),
            "start": {"dateTime": local.isoformat(), "timeZone": self.zone},
            "end": {
                "dateTime": (local + timedelta(minutes=minutes)).isoformat(),
                "timeZone": self.zone,
            },
        }
        # Optional fields are absent rather than empty, as Google sends them.
        if rng.random() < 0.5:
            event["location"] = rng.choice(PLACES)
        if rng.random() < 0.3:
            event["description"] = "<b>Agenda</b>: notes from last time, next steps."
        if rng.random() < 0.4:
            guests = rng.sample(PEOPLE, rng.randint(1, 3))
            event["attendees"] = [
                {"email": self.email, "organizer": True, "self": True, "responseStatus": "accepted"}
            ] + [
                {
                    "email": guest,
                    "responseStatus": rng.choice(("accepted", "tentative", "needsAction")),
                    **({"optional": True} if rng.random() < 0.2 else {}),
                }
                for guest in guests
            ]
        return event

    def _series(self, calendar_id: str, created: datetime) -> dict[str, dict[str, Any]]:
        """A weekly series of ten (Mondays at 10), its instances, one moved and one cancelled."""
        zone = ZoneInfo(self.zone)
        first = (self.anchor - timedelta(days=28)).date()
        first += timedelta(days=(7 - first.weekday()) % 7)
        master_id = _event_id(self.email, "series")
        start = datetime(first.year, first.month, first.day, 10, 0, tzinfo=zone)
        master = {
            **self._common(calendar_id, master_id, created),
            "summary": "Team sync",
            "location": "Room 4.12",
            "start": {"dateTime": start.isoformat(), "timeZone": self.zone},
            "end": {"dateTime": (start + timedelta(minutes=30)).isoformat(), "timeZone": self.zone},
            "recurrence": ["RRULE:FREQ=WEEKLY;COUNT=10;BYDAY=MO"],
            "_master": True,
        }
        events = {master_id: master}
        for week in range(10):
            day = first + timedelta(weeks=week)
            planned = datetime(day.year, day.month, day.day, 10, 0, tzinfo=zone)
            instance_id = f"{master_id}_{_basic(planned)}"
            moved = planned + timedelta(hours=1) if week == 5 else planned
            instance = {
                **{k: v for k, v in master.items() if k not in ("recurrence", "_master")},
                "id": instance_id,
                "recurringEventId": master_id,
                "originalStartTime": {"dateTime": planned.isoformat(), "timeZone": self.zone},
                "start": {"dateTime": moved.isoformat(), "timeZone": self.zone},
                "end": {
                    "dateTime": (moved + timedelta(minutes=30)).isoformat(),
                    "timeZone": self.zone,
                },
                "_instance": True,
            }
            if week == 5:
                instance["_exception"] = True
            if week == 7:
                instance = _cancelled(instance)
                instance["_instance"] = True
                instance["_exception"] = True
            events[instance_id] = instance
        return events

    # Activity steps ----------------------------------------------------------------------------

    def steps(self) -> list[datetime]:
        return store.activity_ticks(NAMESPACE, self.email)

    def _step(
        self, events: dict[str, dict[str, Any]], seq: int, at: datetime
    ) -> dict[str, dict[str, Any]]:
        """What step ``seq`` changes on the primary calendar: {event id: its new state}."""
        rng = seeded_random("gcal-step", self.email, seq)
        changed: dict[str, dict[str, Any]] = {}
        zone = ZoneInfo(self.zone)
        for n in range(2):
            day = (at + timedelta(days=rng.randint(1, 5))).astimezone(zone).date()
            local = datetime(day.year, day.month, day.day, rng.choice((9, 12, 17)), 0, tzinfo=zone)
            event_id = _event_id(self.email, "step", seq, n)
            event = self._timed(self.email, event_id, local, 60, at, rng)
            changed[event_id] = event
        # Changed and cancelled: single events near the step, still live.
        near = sorted(
            event_id
            for event_id, event in events.items()
            if event.get("status") != "cancelled"
            and not event.get("_master")
            and not event.get("_instance")
            and "dateTime" in event.get("start", {})
            and abs((_start_of(event) - at).total_seconds()) < 7 * 86400
        )
        picks = rng.sample(near, min(2, len(near)))
        if picks:
            updated = dict(events[picks[0]])
            updated["summary"] = f"{updated.get('summary', '')} (moved)".strip()
            updated["sequence"] = int(updated.get("sequence", 0)) + 1
            changed[picks[0]] = updated
        if len(picks) > 1:
            changed[picks[1]] = _cancelled(events[picks[1]])
        for event in changed.values():
            event["updated"] = rfc3339(at)
            event["etag"] = f'"{stable_int("gcal-event-etag", event["id"], seq + 1) % 10**16}"'
        return changed

    def events(self, calendar_id: str, version: int) -> tuple[dict[str, dict], dict[str, int]]:
        """The calendar's events after ``version`` steps, and the step that last changed each
        (0 for events untouched since the seed)."""
        events = self._base(calendar_id)
        touched = dict.fromkeys(events, 0)
        if calendar_id != self.email:
            return events, touched
        for seq, at in enumerate(self.steps()[:version]):
            for event_id, event in self._step(events, seq, at).items():
                events[event_id] = event
                touched[event_id] = seq + 1
        return events, touched


def _cancelled(event: dict[str, Any]) -> dict[str, Any]:
    """A cancelled event as Google lists it: only the id, or the series and original start."""
    kept = {"kind": "calendar#event", "etag": event.get("etag"), "id": event["id"]}
    if event.get("recurringEventId"):
        kept["recurringEventId"] = event["recurringEventId"]
        kept["originalStartTime"] = event["originalStartTime"]
    # Private: where it was, so listings keep their order (stripped from answers).
    return {
        **kept,
        "status": "cancelled",
        "_start": event.get("start") or kept.get("originalStartTime"),
    }


def _start_of(event: dict[str, Any]) -> datetime:
    start = event.get("start") or event.get("originalStartTime") or event.get("_start") or {}
    if "dateTime" in start:
        return datetime.fromisoformat(start["dateTime"])
    day = date.fromisoformat(start["date"])
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _end_of(event: dict[str, Any]) -> datetime:
    end = event.get("end") or {}
    if "dateTime" in end:
        return datetime.fromisoformat(end["dateTime"])
    if "date" in end:
        day = date.fromisoformat(end["date"])
        return datetime(day.year, day.month, day.day, tzinfo=UTC)
    return _start_of(event)


def _public(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if not k.startswith("_")}


# --- Errors -------------------------------------------------------------------------------------


def _bad_request(message: str, *, reason: str = "invalid", location: str = "") -> HttpResponse:
    extra = {"locationType": "parameter", "location": location} if location else None
    return api_error(400, message, "INVALID_ARGUMENT", reason=reason, extra=extra)


def _not_found() -> HttpResponse:
    return api_error(404, "Not Found", "NOT_FOUND", reason="notFound")


def full_sync_required() -> HttpResponse:
    """The 410 of the sync guide, as documented (no ``status`` field)."""
    message = "Sync token is no longer valid, a full sync is required."
    return json_response(
        {
            "error": {
                "errors": [
                    {
                        "domain": "calendar",
                        "reason": "fullSyncRequired",
                        "message": message,
                        "locationType": "parameter",
                        "location": "syncToken",
                    }
                ],
                "code": 410,
                "message": message,
            }
        },
        status=410,
    )


def user_rate_limited() -> HttpResponse:
    return api_error(
        403,
        "Rate Limit Exceeded",
        "PERMISSION_DENIED",
        reason="userRateLimitExceeded",
        domain="usageLimits",
    )


# Calendar's quotas (https://developers.google.com/workspace/calendar/api/guides/quota):
# requests per minute per user (403 userRateLimitExceeded) and per project (429
# rateLimitExceeded), on a sliding window.
quotas = [
    Quota("user", "account", 600, 60, lambda q: user_rate_limited()),
    Quota("project", "app", 10_000, 60, lambda q: rate_limited(SERVICE, retry_after=False)),
]
quota_caller = google_quota_caller


def _caller(request: HttpRequest, scopes: frozenset[str]) -> GoogleCaller | HttpResponse:
    caller = google_caller(request, SERVICE)
    if isinstance(caller, HttpResponse):
        return caller
    if not caller.has_any_scope(*scopes):
        return insufficient_scope(SERVICE)
    if fault_take("google", caller.email, "user_rate_limit", caller.pending_faults):
        return user_rate_limited()
    return caller


def _int_param(request: HttpRequest, name: str, default: int, ceiling: int) -> int | None:
    raw = request.GET.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        return None
    return min(value, ceiling) if value > 0 else None


def _bool_param(request: HttpRequest, name: str) -> bool | None:
    raw = request.GET.get(name)
    if raw is None:
        return None
    return raw.lower() == "true"


def _time_param(request: HttpRequest, name: str) -> datetime | HttpResponse | None:
    raw = request.GET.get(name)
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return _bad_request("Bad Request", reason="badRequest", location=name)
    if moment.tzinfo is None:  # RFC 3339 with a mandatory offset
        return _bad_request("Bad Request", reason="badRequest", location=name)
    return moment


# --- calendarList.list --------------------------------------------------------------------------


@csrf_exempt
@require_GET
def calendar_list(request: HttpRequest) -> HttpResponse:
    caller = _caller(request, SCOPES_LIST)
    if isinstance(caller, HttpResponse):
        return caller
    size = _int_param(request, "maxResults", DEFAULT_LIST_PAGE, MAX_LIST_PAGE)
    if size is None:
        return _bad_request("Invalid value for maxResults", location="maxResults")
    # Hidden and deleted entries are left out unless asked for (calendarList.list's defaults).
    show_hidden = _bool_param(request, "showHidden") is True
    show_deleted = _bool_param(request, "showDeleted") is True
    entries = [
        entry
        for entry in Account(caller.email).calendars()
        if (show_hidden or not entry.get("hidden")) and (show_deleted or not entry.get("deleted"))
    ]
    offset = 0
    if request.GET.get("pageToken"):
        token = opaque_decode(request.GET["pageToken"])
        if not isinstance(token, dict) or token.get("l") != caller.email:
            return _bad_request("Invalid page token", location="pageToken")
        offset = int(token.get("o", 0))
    page = entries[offset : offset + size]
    body: dict[str, Any] = {
        "kind": "calendar#calendarList",
        "etag": f'"p{stable_int("gcal-list", caller.email) % 10**14}"',
        "items": page,
    }
    if offset + size < len(entries):
        body["nextPageToken"] = opaque_encode({"l": caller.email, "o": offset + size})
    else:
        body["nextSyncToken"] = opaque_encode({"l": caller.email, "s": 1})
    return json_response(body)


# --- events.list --------------------------------------------------------------------------------


def _query(request: HttpRequest) -> dict[str, Any]:
    """What a page token and a sync token stay tied to."""
    return {
        "e": request.GET.get("singleEvents", "false").lower() == "true",
        "d": request.GET.get("showDeleted", "false").lower() == "true",
    }


@csrf_exempt
@require_GET
def events_list(request: HttpRequest, calendar_id: str) -> HttpResponse:
    caller = _caller(request, SCOPES_EVENTS)
    if isinstance(caller, HttpResponse):
        return caller
    account = Account(caller.email)
    calendar = account.calendar(calendar_id)
    if calendar is None:
        return _not_found()
    calendar_id = calendar["id"]
    size = _int_param(request, "maxResults", DEFAULT_EVENTS_PAGE, MAX_EVENTS_PAGE)
    if size is None:
        return _bad_request("Invalid value for maxResults", location="maxResults")
    query = _query(request)
    sync_raw = request.GET.get("syncToken")
    page_raw = request.GET.get("pageToken")
    since: int | None = None
    if page_raw:
        token = opaque_decode(page_raw)
        if not isinstance(token, dict) or token.get("c") != calendar_id or token.get("q") != query:
            return _bad_request("Invalid page token", location="pageToken")
        version, offset, since = int(token["v"]), int(token["o"]), token.get("s")
        time_min = datetime.fromisoformat(token["m"]) if token.get("m") else None
        time_max = datetime.fromisoformat(token["x"]) if token.get("x") else None
    else:
        offset = 0
        version = len(account.steps())
        time_min = time_max = None
        if sync_raw:
            if any(name in request.GET for name in FORBIDDEN_WITH_SYNC_TOKEN):
                return _bad_request(
                    "The requested parameters are not compatible with a sync token.",
                    location="syncToken",
                )
            if _bool_param(request, "showDeleted") is False:
                return _bad_request(
                    "showDeleted=false cannot be used with a sync token.", location="showDeleted"
                )
            token = opaque_decode(sync_raw)
            if fault_take("google", caller.email, "full_sync_required", caller.pending_faults):
                return full_sync_required()
            if (
                not isinstance(token, dict)
                or token.get("c") != calendar_id
                or not isinstance(token.get("q"), dict)
                or not isinstance(token.get("v"), int)
                or token["v"] > version
            ):
                return full_sync_required()
            if token["q"].get("e") != query["e"]:
                # The guide: keep the parameters of the full sync that issued the token.
                return _bad_request(
                    "singleEvents must be as in the request that issued the sync token.",
                    location="singleEvents",
                )
            since = token["v"]
        else:
            found = _time_param(request, "timeMin")
            if isinstance(found, HttpResponse):
                return found
            time_min = found
            found = _time_param(request, "timeMax")
            if isinstance(found, HttpResponse):
                return found
            time_max = found
    events, touched = account.events(calendar_id, version)
    show_deleted = query["d"] or since is not None  # a sync token always shows deletions
    chosen = []
    for event_id, event in events.items():
        if since is not None and touched[event_id] <= since:
            continue
        if query["e"] and event.get("_master"):
            continue
        if not query["e"] and event.get("_instance") and not event.get("_exception"):
            continue
        if event.get("status") == "cancelled" and not show_deleted:
            continue
        if time_min is not None and event.get("status") != "cancelled":
            if _end_of(event) <= time_min:
                continue
        if time_max is not None and event.get("status") != "cancelled":
            if _start_of(event) >= time_max:
                continue
        chosen.append(event)
    chosen.sort(key=lambda e: (_start_of(e).astimezone(UTC), e["id"]))
    page = [_public(e) for e in chosen[offset : offset + size]]
    if page and fault_take("google", caller.email, "malformed", caller.pending_faults):
        page[0] = {**page[0], "start": {"dateTime": "not-a-time"}}
    body: dict[str, Any] = {
        "kind": "calendar#events",
        "etag": f'"p{stable_int("gcal-events", calendar_id, version) % 10**14}"',
        "summary": calendar["summary"],
        "updated": rfc3339(account.steps()[version - 1] if version else account.anchor),
        "timeZone": calendar["timeZone"],
        "accessRole": calendar["accessRole"],
        "defaultReminders": [{"method": "popup", "minutes": 10}]
        if calendar["accessRole"] in ("owner", "writer")
        else [],
        "items": page,
    }
    if offset + size < len(chosen):
        body["nextPageToken"] = opaque_encode(
            {
                "c": calendar_id,
                "q": query,
                "v": version,
                "o": offset + size,
                "s": since,
                "m": time_min.isoformat() if time_min else None,
                "x": time_max.isoformat() if time_max else None,
            }
        )
    else:
        body["nextSyncToken"] = opaque_encode({"c": calendar_id, "q": query, "v": version})
    return json_response(body)


# --- Channels -----------------------------------------------------------------------------------


def _resource_id(email: str, calendar_id: str) -> str:
    return stable_base62(27, "gcal-resource", email, calendar_id)


def _resource_uri(calendar_id: str) -> str:
    return f"{API_ROOT}/calendars/{quote(calendar_id, safe='')}/events?alt=json"


@csrf_exempt
@require_POST
def events_watch(request: HttpRequest, calendar_id: str) -> HttpResponse:
    caller = _caller(request, SCOPES_EVENTS)
    if isinstance(caller, HttpResponse):
        return caller
    account = Account(caller.email)
    calendar = account.calendar(calendar_id)
    if calendar is None:
        return _not_found()
    body = json_body(request)
    if body is None:
        return _bad_request("Parse Error", reason="parseError")
    channel_id, kind, address = body.get("id"), body.get("type"), body.get("address")
    token = body.get("token")
    if not isinstance(channel_id, str) or not channel_id or len(channel_id) > 64:
        return _bad_request("Channel id must be 1 to 64 characters.", reason="required")
    if kind not in ("web_hook", "webhook"):
        return _bad_request(f"Unknown channel type: {kind}", reason="invalid")
    if not isinstance(address, str) or not address.startswith(("https://", "http://")):
        # Google takes https only; the sandbox also serves plain http development servers.
        return _bad_request(
            f"Invalid notification address: {address}", reason="push.webhookUrlNotHttps"
        )
    if token is not None and (not isinstance(token, str) or len(token) > 256):
        return _bad_request("Channel token must be at most 256 characters.", reason="invalid")
    if store.record_get(NAMESPACE, "channel", channel_id) is not None:
        return _bad_request(f"Channel id {channel_id} not unique", reason="channelIdNotUnique")
    now_ms = int(time.time() * 1000)
    ceiling = now_ms + MAX_CHANNEL_S * 1000
    try:
        asked = int(str(body.get("expiration") or ceiling))
    except ValueError:
        return _bad_request("Invalid expiration", reason="invalid")
    expiration = min(max(asked, now_ms + 1000), ceiling)
    resource_id = _resource_id(caller.email, calendar["id"])
    store.record_put(
        NAMESPACE,
        "channel",
        channel_id,
        account=caller.email,
        data={
            "calendar_id": calendar["id"],
            "address": address,
            "token": token or "",
            "resource_id": resource_id,
            "expiration_ms": expiration,
            "message_number": 0,
        },
        expires_at=datetime.fromtimestamp(expiration / 1000, tz=UTC),
    )
    # Google's first message on a channel, possibly before the answer to the watch.
    activity_webhook_send(lambda: notify_channel(channel_id, "sync"))
    answer = {
        "kind": "api#channel",
        "id": channel_id,
        "resourceId": resource_id,
        "resourceUri": _resource_uri(calendar["id"]),
        "expiration": str(expiration),
    }
    if token:
        answer["token"] = token
    return json_response(answer)


@csrf_exempt
@require_POST
def channels_stop(request: HttpRequest) -> HttpResponse:
    caller = google_caller(request, SERVICE)
    if isinstance(caller, HttpResponse):
        return caller
    body = json_body(request)
    if body is None:
        return _bad_request("Parse Error", reason="parseError")
    channel_id, resource_id = body.get("id"), body.get("resourceId")
    record = store.record_get(NAMESPACE, "channel", str(channel_id or ""), live=True)
    if (
        record is None
        or record.account != caller.email
        or record.data.get("resource_id") != resource_id
    ):
        # Only the user (and client) that opened a channel may stop it.
        return api_error(
            404,
            f"Channel '{channel_id}' not found for project",
            "NOT_FOUND",
            reason="notFound",
        )
    store.record_delete(NAMESPACE, "channel", record.key)
    return HttpResponse(status=204)


def channels_live(email: str, calendar_id: str | None = None) -> list[Any]:
    return [
        record
        for record in store.records_of(NAMESPACE, email, "channel")
        if store.record_live(record)
        and (calendar_id is None or record.data.get("calendar_id") == calendar_id)
    ]


def notify_channel(
    channel_id: str,
    state: str,
    *,
    url: str | None = None,
    token: str | None = None,
    duplicate: bool = False,
) -> list[int] | None:
    """One notification on a channel: no body, the channel's headers; None if it is gone."""
    record = store.record_get(NAMESPACE, "channel", channel_id, live=True)
    if record is None:
        return None
    data = record.data
    # Numbers rise, not one by one (as Google's do); the handshake is always 1.
    number = (
        1
        if state == "sync"
        else int(data.get("message_number") or 1)
        + 1
        + (stable_int("gcal-msg", channel_id, data.get("message_number")) % 3)
    )
    store.record_set(record, message_number=number)
    expires = datetime.fromtimestamp(int(data["expiration_ms"]) / 1000, tz=UTC)
    headers = {
        "User-Agent": USER_AGENT,
        "X-Goog-Channel-ID": channel_id,
        "X-Goog-Channel-Expiration": format_datetime(expires, usegmt=True),
        "X-Goog-Message-Number": str(number),
        "X-Goog-Resource-ID": data["resource_id"],
        "X-Goog-Resource-State": state,
        "X-Goog-Resource-URI": _resource_uri(data["calendar_id"]),
    }
    sent_token = data.get("token") if token is None else token
    if sent_token:
        headers["X-Goog-Channel-Token"] = sent_token
    return deliver(url or data["address"], b"", headers, duplicate=duplicate)


def fault_apply(account: str, fault: str, count: int) -> bool:
    """``new_events``: ``count`` activity steps, then ``exists`` on the primary's channels."""
    if fault != "new_events":
        return False
    google_account_ensure(account)
    for _ in range(count):
        store.activity_tick_add(NAMESPACE, account)

    def send() -> list[int] | None:
        statuses: list[int] = []
        for record in channels_live(account, account):
            statuses += notify_channel(record.key, "exists") or []
        return statuses or None

    activity_webhook_send(send)
    return True


def _control_notify(body: dict, url: str) -> dict:
    """Send one notification on each live channel of an account (or on one channel)."""
    email = text(body, "email").lower()
    state = body.get("state", "exists")
    if state not in ("sync", "exists", "not_exists"):
        raise WebhookInputError("state must be sync, exists or not_exists")
    token = body.get("token")
    if token is not None and not isinstance(token, str):
        raise WebhookInputError("token must be a string")
    duplicate = body.get("duplicate", False)
    if not isinstance(duplicate, bool):
        raise WebhookInputError("duplicate must be true or false")
    wanted = body.get("channel_id")
    channels = [
        record.key
        for record in channels_live(email, body.get("calendar_id"))
        if wanted is None or record.key == wanted
    ]
    if not channels:
        raise WebhookInputError("no live channel for this account")
    statuses: list[int] = []
    for channel_id in channels:
        statuses += notify_channel(channel_id, state, token=token, duplicate=duplicate) or []
    return {"statuses": statuses, "channels": len(channels)}


webhook_controls = {"notify": _control_notify}

_API = "google/calendar/v3"
urlpatterns = [
    path(f"{_API}/users/me/calendarList", calendar_list, name="google_calendar-calendar-list"),
    path(
        f"{_API}/calendars/<str:calendar_id>/events",
        events_list,
        name="google_calendar-events",
    ),
    path(
        f"{_API}/calendars/<str:calendar_id>/events/watch",
        events_watch,
        name="google_calendar-events-watch",
    ),
    path(f"{_API}/channels/stop", channels_stop, name="google_calendar-channels-stop"),
]

__all__ = ["fault_apply", "fault_names", "scope_words", "urlpatterns", "webhook_controls"]
