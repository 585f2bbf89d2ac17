"""The sandbox's Gmail: the Gmail API (v1) over a synthetic mailbox (profile, messages.list/get,
history, watch) and its Pub/Sub pushes, signed with Google's OIDC tokens.

Each account's mailbox is generated from its email: 90 days of mail up to the moment the sandbox
first saw the account (`GoogleAccount.created_at`), plus what each `new_activity` step added, read
or deleted since. Days are generated only when a request reaches them.

History ids are increasing and non-contiguous. The history the sandbox keeps starts at the
mailbox's initial historyId (what a full sync stores); anything older is answered with 404, which
tells a client to run a full sync (https://developers.google.com/gmail/api/guides/sync).
Message ids are 16 hex digits that encode their day and slot plus a check on the account, so a
message is found without storing it.

Pushes: the Pub/Sub push envelope with `Authorization: Bearer <RS256 OIDC token>`, verifiable
with the JWKS served at `/sandbox/google/oauth2/v3/certs` (Google's is
https://www.googleapis.com/oauth2/v3/certs). A `new_activity` fault on a watched mailbox pushes
to the watch's endpoint (this app's receiver unless set otherwise), unless
settings.SIBLING_SANDBOX_SEND_WEBHOOKS is off. Watches are records of the sandbox's state store.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError
from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from sources.sandbox.common import (
    epoch_ms,
    json_body,
    json_response,
    opaque_decode,
    opaque_encode,
    seeded_random,
    stable_int,
)
from sources.sandbox.faults import fault_take
from sources.sandbox.google import (
    GoogleCaller,
    api_error,
    display_names,
    google_account_ensure,
    google_caller,
    google_id_token,
    google_quota_caller,
    insufficient_scope,
    rate_limited,
    user_rate_limited,
)
from sources.sandbox.google_batch import batch_endpoint
from sources.sandbox.quotas import Quota
from sources.sandbox.store import (
    activity_tick_add,
    activity_ticks,
    record_create,
    record_delete,
    record_expire,
    record_get,
    record_put,
    record_set,
)
from sources.sandbox.webhooks import (
    WebhookInputError,
    activity_webhook_send,
    default_receiver,
    deliver,
    flag,
    json_bytes,
    text,
)

SERVICE = "gmail.googleapis.com"
HISTORY_DAYS = 90
TICK_SLOT_BASE = 0x800
TICK_NEW_MESSAGES = 3
WATCH_LIFETIME = timedelta(days=7)
READ_SCOPES = (
    "https://www.googleapis.com/auth/gmail.readonly",
    "https://www.googleapis.com/auth/gmail.modify",
    "https://mail.google.com/",
)
METADATA_SCOPE = "https://www.googleapis.com/auth/gmail.metadata"
# Records of the state store: (namespace, kind) of a mailbox's watch, keyed by its email.
STORE = "gmail"
WATCH = "watch"
# A mailbox seeded to a given size (mailbox_size_set), keyed by its email.
SIZE = "size"
# Mailboxes belong to Google accounts: faults and activity steps address the family.
FAMILY = "google"

scope_words = {
    "https://www.googleapis.com/auth/gmail.readonly": "View your email messages and settings",
    METADATA_SCOPE: (
        "View your email message metadata such as labels and headers, but not the email body"
    ),
}

_SENDERS = [
    ("Alex Rivera", "alex.rivera@example.org"),
    ("Priya Shah", "priya@example.net"),
    ("Sam Okafor", "sam.okafor@example.com"),
    ("Sandbox Bank", "alerts@bank.example"),
    ("Weekly Digest", "digest@news.example"),
    ("Team Calendar", "calendar-notification@example.com"),
    ("Jordan Lee", "jordan.lee@example.org"),
    ("Shop Example", "orders@shop.example"),
]
_SUBJECTS = [
    "Lunch on {day}?",
    "Your statement is ready",
    "Notes from the {day} meeting",
    "Order #{n} has shipped",
    "Weekly digest: {n} new stories",
    "Invitation: planning session",
    "Quick question about the draft",
    "Photos from the weekend",
    "Reminder: appointment on {day}",
    "Re-scheduling our call",
]
_CATEGORIES = ["CATEGORY_PERSONAL", "CATEGORY_UPDATES", "CATEGORY_PROMOTIONS", "CATEGORY_SOCIAL"]


@dataclass(frozen=True)
class Stub:
    """What listing needs of a message; content is derived from the id when fetched."""

    id: str
    thread_id: str
    ms: int
    labels: tuple[str, ...]
    history_id: int

    @property
    def key(self) -> tuple[int, str]:
        return (self.ms, self.id)


def _check(email: str, ordinal: int, slot: int) -> str:
    return f"{stable_int('gmail-id', email, ordinal, slot) % 16**8:08x}"


def mailbox_size_set(email: str, per_day: int) -> None:
    """Seed the account's mailbox with `per_day` messages on every day of its history instead of
    the usual handful (benchmarks and tests that need a large mailbox); before its first request,
    so what a client lists never changes under it. Slots below TICK_SLOT_BASE hold a day's mail."""
    if not 0 < per_day < TICK_SLOT_BASE:
        raise ValueError(f"per_day must be between 1 and {TICK_SLOT_BASE - 1}")
    record_put(STORE, SIZE, google_account_ensure(email).email, data={"per_day": per_day})


def message_id(email: str, ordinal: int, slot: int) -> str:
    return f"{ordinal:05x}{slot:03x}{_check(email, ordinal, slot)}"


def _parse_id(email: str, value: str) -> tuple[int, int] | None:
    if not re.fullmatch(r"[0-9a-f]{16}", value or ""):
        return None
    ordinal, slot = int(value[:5], 16), int(value[5:8], 16)
    return (ordinal, slot) if value[8:] == _check(email, ordinal, slot) else None


class Mailbox:
    """One account's mailbox: natural days, then the changes of each activity step."""

    def __init__(
        self, email: str, anchor: datetime, ticks: list[datetime], per_day: int | None = None
    ) -> None:
        self.email = email
        self.per_day = per_day
        self.anchor = anchor
        self.anchor_ms = epoch_ms(anchor)
        self.last_ordinal = anchor.astimezone(UTC).date().toordinal()
        self.first_ordinal = self.last_ordinal - HISTORY_DAYS
        self.base = 1_000_000 + stable_int("gmail-history", email) % 9_000_000
        self.initial_history_id = self.base + (HISTORY_DAYS + 1) * 100
        self.ticks = ticks

    @classmethod
    def load(cls, email: str) -> Mailbox:
        account = google_account_ensure(email)
        ticks = activity_ticks(FAMILY, account.email)
        size = record_get(STORE, SIZE, account.email)
        per_day = size.data.get("per_day") if size is not None else None
        return cls(account.email, account.created_at, ticks, per_day)

    # Natural mail ---------------------------------------------------------------------------

    def _natural_day(self, ordinal: int) -> list[Stub]:
        return list(_natural_day_cached(self.email, self.anchor, self.per_day, ordinal))

    def _natural_day_build(self, ordinal: int) -> list[Stub]:
        if not self.first_ordinal <= ordinal <= self.last_ordinal:
            return []
        day = date.fromordinal(ordinal)
        rng = seeded_random("gmail-day", self.email, ordinal)
        count = rng.randint(1, 4) if day.weekday() >= 5 else rng.randint(3, 12)
        if self.per_day:
            count = self.per_day
        seconds = sorted(rng.randrange(6 * 3600, 23 * 3600) for _ in range(count))
        midnight_ms = epoch_ms(datetime(day.year, day.month, day.day, tzinfo=UTC))
        recent = self.last_ordinal - ordinal < 3
        stubs: list[Stub] = []
        for slot, second in enumerate(seconds):
            # Every draw happens before any filtering, so a day always yields the same mail.
            millis, kind, unread, important, category, reply, jitter = (
                rng.randrange(1000),
                rng.random(),
                rng.random(),
                rng.random(),
                rng.choice(_CATEGORIES),
                rng.random(),
                rng.randint(1, 3),
            )
            ms = midnight_ms + second * 1000 + millis
            if ms > self.anchor_ms:
                break
            if kind < 0.1:
                labels: tuple[str, ...] = ("SENT",)
            else:
                labels = ("INBOX", category)
                if unread < (0.7 if recent else 0.25):
                    labels += ("UNREAD",)
                if important < 0.2:
                    labels += ("IMPORTANT",)
            mid = message_id(self.email, ordinal, slot)
            thread = stubs[-1].thread_id if stubs and reply < 0.25 else mid
            history_id = self.base + (ordinal - self.first_ordinal) * 100 + slot * 4 + jitter
            stubs.append(Stub(mid, thread, ms, tuple(sorted(labels)), history_id))
        return stubs

    # Activity steps -------------------------------------------------------------------------

    def _tick_base(self, seq: int) -> int:
        return self.initial_history_id + (seq + 1) * 100

    def _tick_new(self, seq: int) -> list[Stub]:
        at = self.ticks[seq]
        ordinal = at.astimezone(UTC).date().toordinal()
        stubs = []
        for j in range(TICK_NEW_MESSAGES):
            mid = message_id(self.email, ordinal, TICK_SLOT_BASE + seq * 4 + j)
            category = _CATEGORIES[(seq + j) % 2]
            stubs.append(
                Stub(
                    mid,
                    mid,
                    epoch_ms(at) + j * 1000,
                    tuple(sorted(("INBOX", category, "UNREAD"))),
                    self._tick_base(seq) + j * 7 + 1,
                )
            )
        return stubs

    @cached_property
    def changes(self) -> tuple[list[dict], set[str], dict[str, Stub]]:
        """History records, deleted ids and changed stubs after replaying every step."""
        records: list[dict] = []
        deleted: set[str] = set()
        changed: dict[str, Stub] = {}
        recent: list[Stub] = []
        if not self.ticks:
            return records, deleted, changed
        for ordinal in range(self.last_ordinal - 6, self.last_ordinal + 1):
            recent.extend(self._natural_day(ordinal))
        for seq in range(len(self.ticks)):
            base = self._tick_base(seq)
            for stub in self._tick_new(seq):
                records.append(
                    {
                        "id": str(stub.history_id),
                        "messages": [_ref(stub)],
                        "messagesAdded": [{"message": _ref(stub, labels=True)}],
                    }
                )
            rng = seeded_random("gmail-tick", self.email, seq)
            live = [changed.get(s.id, s) for s in recent if s.id not in deleted]
            unread = [s for s in live if "UNREAD" in s.labels]
            if unread:
                target = rng.choice(unread)
                updated = replace(
                    target,
                    labels=tuple(x for x in target.labels if x != "UNREAD"),
                    history_id=base + 22,
                )
                changed[target.id] = updated
                records.append(
                    {
                        "id": str(updated.history_id),
                        "messages": [_ref(updated)],
                        "labelsRemoved": [
                            {"message": _ref(updated, labels=True), "labelIds": ["UNREAD"]}
                        ],
                    }
                )
            candidates = [s for s in live if s.id not in changed]
            if candidates:
                gone = rng.choice(candidates)
                deleted.add(gone.id)
                records.append(
                    {
                        "id": str(base + 29),
                        "messages": [_ref(gone)],
                        "messagesDeleted": [{"message": _ref(gone, labels=True)}],
                    }
                )
        return records, deleted, changed

    @property
    def history_id(self) -> int:
        records = self.changes[0]
        return int(records[-1]["id"]) if records else self.initial_history_id

    def day(self, ordinal: int) -> list[Stub]:
        """The live messages of one UTC day, newest first."""
        _, deleted, changed = self.changes
        stubs = [changed.get(s.id, s) for s in self._natural_day(ordinal) if s.id not in deleted]
        for seq, at in enumerate(self.ticks):
            if at.astimezone(UTC).date().toordinal() == ordinal:
                stubs.extend(s for s in self._tick_new(seq) if s.id not in deleted)
        return sorted(stubs, key=lambda s: s.key, reverse=True)

    def newest_ordinal(self) -> int:
        tick_days = [t.astimezone(UTC).date().toordinal() for t in self.ticks]
        return max([self.last_ordinal, *tick_days])

    def find(self, mid: str) -> Stub | None:
        parsed = _parse_id(self.email, mid)
        if parsed is None:
            return None
        return next((s for s in self.day(parsed[0]) if s.id == mid), None)


@functools.lru_cache(maxsize=4096)
def _natural_day_cached(
    email: str, anchor: datetime, per_day: int | None, ordinal: int
) -> tuple[Stub, ...]:
    """A day of natural mail, generated once per process: it depends on nothing else, and every
    request (each part of a batch) loads its mailbox afresh."""
    return tuple(Mailbox(email, anchor, [], per_day)._natural_day_build(ordinal))


def _ref(stub: Stub, *, labels: bool = False) -> dict:
    ref: dict = {"id": stub.id, "threadId": stub.thread_id}
    if labels:
        ref["labelIds"] = list(stub.labels)
    return ref


# --- Message content ------------------------------------------------------------------------------


def _subject(email: str, mid: str) -> str:
    rng = seeded_random("gmail-subject", email, mid)
    template = rng.choice(_SUBJECTS)
    day = rng.choice(["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"])
    return template.format(day=day, n=rng.randint(100, 9999))


def _content(mailbox: Mailbox, stub: Stub) -> dict:
    rng = seeded_random("gmail-content", mailbox.email, stub.id)
    sender_name, sender = rng.choice(_SENDERS)
    given, family = display_names(mailbox.email)
    me = f"{given} {family} <{mailbox.email}>"
    other = f"{sender_name} <{sender}>"
    subject = _subject(mailbox.email, stub.thread_id)
    if stub.thread_id != stub.id:
        subject = f"Re: {subject}"
    sent = "SENT" in stub.labels
    text = f"Hi {sender_name.split()[0] if sent else given}, this is a sandbox message about " + (
        f"{subject.lower()}. Nothing else to see here."
    )
    when = datetime.fromtimestamp(stub.ms / 1000, tz=UTC)
    headers = [
        {"name": "From", "value": me if sent else other},
        {"name": "To", "value": other if sent else me},
        {"name": "Subject", "value": subject},
        {"name": "Date", "value": format_datetime(when)},
        {"name": "Message-ID", "value": f"<{stub.id}@sandbox.example>"},
        {"name": "Content-Type", "value": 'text/plain; charset="UTF-8"'},
    ]
    return {"headers": headers, "text": text}


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


def message_resource(
    mailbox: Mailbox,
    stub: Stub,
    fmt: str,
    metadata_headers: list[str],
    *,
    malformed: bool = False,
) -> dict:
    """The Message resource in one of minimal|full|raw|metadata."""
    content = _content(mailbox, stub)
    raw = "".join(f"{h['name']}: {h['value']}\r\n" for h in content["headers"])
    raw = f"{raw}\r\n{content['text']}\r\n".encode()
    message: dict = {
        "id": stub.id,
        "threadId": stub.thread_id,
        "labelIds": list(stub.labels),
        "snippet": content["text"][:100],
        "historyId": str(stub.history_id),
        "internalDate": str(stub.ms),
        "sizeEstimate": len(raw),
    }
    if fmt == "raw":
        message["raw"] = _b64url(raw)
    elif fmt == "metadata":
        wanted = {h.lower() for h in metadata_headers}
        headers = [h for h in content["headers"] if not wanted or h["name"].lower() in wanted]
        message["payload"] = {
            "partId": "",
            "mimeType": "text/plain",
            "filename": "",
            "headers": headers,
        }
    elif fmt == "full":
        body = content["text"].encode()
        message["payload"] = {
            "partId": "",
            "mimeType": "text/plain",
            "filename": "",
            "headers": content["headers"],
            "body": {"size": len(body), "data": _b64url(body)},
        }
    if malformed:
        # What a client must survive: a timestamp that is not one and a payload without headers.
        message["internalDate"] = "not-a-timestamp"
        if "payload" in message:
            del message["payload"]["headers"]
    return message


# --- Query (q) ------------------------------------------------------------------------------------


@dataclass
class Query:
    """The part of Gmail's search syntax the sandbox understands; other terms match everything."""

    after_ms: int | None = None
    before_ms: int | None = None
    labels: tuple[str, ...] = ()
    without: tuple[str, ...] = ()

    def matches(self, stub: Stub) -> bool:
        if self.after_ms is not None and stub.ms < self.after_ms:
            return False
        if self.before_ms is not None and stub.ms >= self.before_ms:
            return False
        if any(label not in stub.labels for label in self.labels):
            return False
        return not any(label in stub.labels for label in self.without)


def _date_ms(value: str) -> int | None:
    if value.isdigit():
        return int(value) * 1000
    try:
        day = datetime.strptime(value.replace("-", "/"), "%Y/%m/%d").replace(tzinfo=UTC)
    except ValueError:
        return None
    return epoch_ms(day)


def _age_ms(value: str) -> int | None:
    match = re.fullmatch(r"(\d+)([dmy])", value)
    if not match:
        return None
    days = int(match.group(1)) * {"d": 1, "m": 30, "y": 365}[match.group(2)]
    return days * 86_400_000


def query_parse(q: str, label_ids: list[str]) -> Query:
    query = Query(labels=tuple(label_ids))
    now_ms = epoch_ms(timezone.now())
    for term in q.split():
        name, _, value = term.lower().partition(":")
        if name in ("after", "before") and (ms := _date_ms(value)) is not None:
            setattr(query, f"{name}_ms", ms)
        elif name in ("newer_than", "older_than") and (age := _age_ms(value)) is not None:
            if name == "newer_than":
                query.after_ms = now_ms - age
            else:
                query.before_ms = now_ms - age
        elif name == "is" and value in ("unread", "read", "important", "starred"):
            if value == "read":
                query.without += ("UNREAD",)
            else:
                query.labels += (value.upper(),)
        elif name in ("in", "label") and value:
            query.labels += (value.upper(),)
    return query


# --- Views ----------------------------------------------------------------------------------------


# Gmail's rate limits answered as 403 (besides the shared 429 `rate_limit` fault), with the
# bodies of https://developers.google.com/workspace/gmail/api/guides/handle-errors
RATE_LIMIT_403 = {
    "user_rate_limit_403": ("userRateLimitExceeded", "User Rate Limit Exceeded"),
    "rate_limit_403": ("rateLimitExceeded", "Rate Limit Exceeded"),
}


# Gmail's quotas (https://developers.google.com/workspace/gmail/api/reference/quota): units per
# minute per user and per project, each method its cost. Projects created since 2026-05-01 have
# the "2026" table, older ones the "legacy" one (settings.GMAIL_QUOTA_TABLE). A batch is not a
# method: each of its parts is charged as the method it calls.
QUOTA_TABLES = {
    "2026": (6_000, {"gmail-message": 20}),
    "legacy": (15_000, {"gmail-message": 5}),
}
QUOTA_COSTS = {
    "gmail-profile": 1,
    "gmail-messages": 5,
    "gmail-history": 2,
    "gmail-watch": 100,
    "gmail-stop": 50,
}
PROJECT_UNITS_PER_MIN = 1_200_000


def quotas() -> list[Quota]:
    table = str(getattr(settings, "GMAIL_QUOTA_TABLE", "2026") or "2026")
    user_limit, costs = QUOTA_TABLES.get(table, QUOTA_TABLES["2026"])
    costs = {**QUOTA_COSTS, **costs}
    counted = {"costs": costs, "routes": frozenset(costs)}
    return [
        Quota("user", "account", user_limit, 60, lambda q: user_rate_limited(), **counted),
        Quota(
            "project",
            "app",
            PROJECT_UNITS_PER_MIN,
            60,
            lambda q: rate_limited(SERVICE, retry_after=False),
            **counted,
        ),
    ]


quota_caller = google_quota_caller


def _caller(request: HttpRequest, user_id: str) -> GoogleCaller | HttpResponse:
    caller = google_caller(request, SERVICE)
    if isinstance(caller, HttpResponse):
        return caller
    for fault, (reason, message) in RATE_LIMIT_403.items():
        if fault_take("google", caller.email, fault, caller.pending_faults):
            return api_error(403, message, "PERMISSION_DENIED", reason=reason, domain="usageLimits")
    if not caller.has_any_scope(*READ_SCOPES, METADATA_SCOPE):
        return insufficient_scope(SERVICE)
    if user_id != "me" and user_id.lower() != caller.email:
        return api_error(
            403, f"Delegation denied for {caller.email}", "PERMISSION_DENIED", reason="forbidden"
        )
    return caller


def _metadata_only(caller: GoogleCaller) -> bool:
    return not caller.has_any_scope(*READ_SCOPES)


def _bad_request(message: str) -> HttpResponse:
    return api_error(400, message, "INVALID_ARGUMENT", reason="invalidArgument")


def _not_found() -> HttpResponse:
    return api_error(404, "Requested entity was not found.", "NOT_FOUND", reason="notFound")


def _int_param(request: HttpRequest, name: str, default: int, maximum: int) -> int | None:
    raw = request.GET.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        return None
    return min(value, maximum) if value > 0 else None


@csrf_exempt
@require_GET
def profile(request: HttpRequest, user_id: str) -> HttpResponse:
    caller = _caller(request, user_id)
    if isinstance(caller, HttpResponse):
        return caller
    mailbox = Mailbox.load(caller.email)
    stubs = [
        s
        for o in range(mailbox.first_ordinal, mailbox.newest_ordinal() + 1)
        for s in mailbox.day(o)
    ]
    return json_response(
        {
            "emailAddress": caller.email,
            "messagesTotal": len(stubs),
            "threadsTotal": len({s.thread_id for s in stubs}),
            "historyId": str(mailbox.history_id),
        }
    )


@csrf_exempt
@require_GET
def messages_list(request: HttpRequest, user_id: str) -> HttpResponse:
    """messages.list: newest first, `maxResults` (100, max 500), opaque `pageToken`."""
    caller = _caller(request, user_id)
    if isinstance(caller, HttpResponse):
        return caller
    q = request.GET.get("q", "")
    if q and _metadata_only(caller):
        return api_error(
            403,
            "Metadata scope does not support 'q' parameter",
            "PERMISSION_DENIED",
            reason="forbidden",
        )
    max_results = _int_param(request, "maxResults", 100, 500)
    if max_results is None:
        return _bad_request("Invalid maxResults")
    after_key: tuple[int, str] | None = None
    token = request.GET.get("pageToken", "")
    if token:
        decoded = opaque_decode(token)
        if not (
            isinstance(decoded, list)
            and len(decoded) == 2
            and isinstance(decoded[0], int)
            and 0 <= decoded[0] < 10**14
            and isinstance(decoded[1], str)
        ):
            return _bad_request("Invalid pageToken")
        after_key = (decoded[0], decoded[1])
    query = query_parse(q, request.GET.getlist("labelIds"))
    mailbox = Mailbox.load(caller.email)

    start = mailbox.newest_ordinal()
    if after_key is not None:
        start = min(start, datetime.fromtimestamp(after_key[0] / 1000, tz=UTC).date().toordinal())
    page: list[Stub] = []
    more = False
    scanned_days = 0
    for ordinal in range(start, mailbox.first_ordinal - 1, -1):
        scanned_days += 1
        for stub in mailbox.day(ordinal):
            if after_key is not None and stub.key >= after_key:
                continue
            if not query.matches(stub):
                continue
            if len(page) == max_results:
                more = True
                break
            page.append(stub)
        if more:
            break
    body: dict = {}
    if page:
        body["messages"] = [_ref(s) for s in page]
    if more:
        body["nextPageToken"] = opaque_encode([page[-1].ms, page[-1].id])
        # Gmail's estimate is rough by design; this one extrapolates from the days read so far.
        remaining_days = max(0, ordinal - mailbox.first_ordinal)
        body["resultSizeEstimate"] = len(page) + int(len(page) / scanned_days * remaining_days)
    else:
        body["resultSizeEstimate"] = len(page)
    return json_response(body)


@csrf_exempt
@require_GET
def message_get(request: HttpRequest, user_id: str, message_id: str) -> HttpResponse:
    caller = _caller(request, user_id)
    if isinstance(caller, HttpResponse):
        return caller
    fmt = request.GET.get("format", "full")
    if fmt not in ("minimal", "full", "raw", "metadata"):
        return _bad_request(f"Invalid value at 'format' ({fmt})")
    if fmt in ("full", "raw") and _metadata_only(caller):
        return api_error(
            403,
            f"Metadata scope doesn't allow format {fmt.upper()}",
            "PERMISSION_DENIED",
            reason="forbidden",
        )
    mailbox = Mailbox.load(caller.email)
    stub = mailbox.find(message_id)
    if stub is None:
        return _not_found()
    malformed = fault_take(FAMILY, caller.email, "malformed", caller.pending_faults)
    return json_response(
        message_resource(
            mailbox, stub, fmt, request.GET.getlist("metadataHeaders"), malformed=malformed
        )
    )


@csrf_exempt
@require_GET
def history_list(request: HttpRequest, user_id: str) -> HttpResponse:
    """history.list from `startHistoryId`; 404 when it is older than the kept history."""
    caller = _caller(request, user_id)
    if isinstance(caller, HttpResponse):
        return caller
    raw_start = request.GET.get("startHistoryId", "")
    if not raw_start:
        return _bad_request("Missing required parameter: startHistoryId")
    if not raw_start.isdigit():
        return _bad_request("Invalid startHistoryId")
    start = int(raw_start)
    max_results = _int_param(request, "maxResults", 100, 500)
    if max_results is None:
        return _bad_request("Invalid maxResults")
    mailbox = Mailbox.load(caller.email)
    if start < mailbox.initial_history_id:
        return _not_found()
    types = set(request.GET.getlist("historyTypes"))
    label = request.GET.get("labelId", "")
    keys = {
        "messageAdded": "messagesAdded",
        "messageDeleted": "messagesDeleted",
        "labelAdded": "labelsAdded",
        "labelRemoved": "labelsRemoved",
    }
    wanted = {keys[t] for t in types if t in keys} or set(keys.values())
    records = []
    for record in mailbox.changes[0]:
        if int(record["id"]) <= start or not wanted.intersection(record):
            continue
        if label and not any(
            label in entry["message"].get("labelIds", [])
            for key in wanted
            for entry in record.get(key, [])
        ):
            continue
        records.append(record)
    offset = 0
    token = request.GET.get("pageToken", "")
    if token:
        decoded = opaque_decode(token)
        if not isinstance(decoded, int) or decoded < 0:
            return _bad_request("Invalid pageToken")
        offset = decoded
    page = records[offset : offset + max_results]
    body: dict = {"historyId": str(mailbox.history_id)}
    if page:
        body["history"] = page
    if offset + max_results < len(records):
        body["nextPageToken"] = opaque_encode(offset + max_results)
    return json_response(body)


@csrf_exempt
@require_POST
def watch(request: HttpRequest, user_id: str) -> HttpResponse:
    """users.watch: remember the topic; `new_activity` then pushes (see `gmail_push_target`)."""
    caller = _caller(request, user_id)
    if isinstance(caller, HttpResponse):
        return caller
    body = json_body(request)
    topic = (body or {}).get("topicName")
    if not isinstance(topic, str) or not re.fullmatch(r"projects/[^/]+/topics/[^/]+", topic):
        return _bad_request(
            "Invalid topicName does not match projects/SOME-ANDROID-PROJECT/topics/*"
        )
    label_ids = (body or {}).get("labelIds") or []
    if not isinstance(label_ids, list) or not all(isinstance(x, str) for x in label_ids):
        return _bad_request("labelIds must be a list of strings")
    for field, proto_field in (
        ("labelFilterBehavior", "label_filter_behavior"),
        ("labelFilterAction", "label_filter_action"),
    ):
        value = (body or {}).get(field)
        if value is not None and value not in _watch_enum(field):
            return _invalid_enum(proto_field, field, value)
    mailbox = Mailbox.load(caller.email)
    expires_at = timezone.now() + WATCH_LIFETIME
    _watch_save(caller.email, topic, label_ids, expires_at)
    expiration = epoch_ms(expires_at)
    return json_response({"historyId": str(mailbox.history_id), "expiration": str(expiration)})


@functools.cache
def _watch_enum(field: str) -> frozenset[str]:
    """The values Google's discovery document (gmail v1, shipped with google-api-python-client)
    lists for a WatchRequest field; anything else is refused as Google refuses it."""
    import googleapiclient

    path = Path(googleapiclient.__file__).parent / "discovery_cache/documents/gmail.v1.json"
    document = json.loads(path.read_text())
    return frozenset(document["schemas"]["WatchRequest"]["properties"][field]["enum"])


def _invalid_enum(proto_field: str, field: str, value: object) -> HttpResponse:
    """Google's 400 for a JSON value its enum does not have: the proto field and the value."""
    enum_type = (
        "type.googleapis.com/google.apps.gmail.v1.WatchRequest." + field[0].upper() + (field[1:])
    )
    shown = json.dumps(value) if isinstance(value, str) else str(value)
    message = f"Invalid value at '{proto_field}' ({enum_type}), {shown}"
    return api_error(
        400,
        message,
        "INVALID_ARGUMENT",
        reason="invalid",
        details=[
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": proto_field, "description": message}],
            }
        ],
    )


@csrf_exempt
@require_POST
def stop(request: HttpRequest, user_id: str) -> HttpResponse:
    caller = _caller(request, user_id)
    if isinstance(caller, HttpResponse):
        return caller
    record_delete(STORE, WATCH, caller.email)
    return HttpResponse(status=204)


def _watch_save(email: str, topic: str, label_ids: list[str], expires_at: datetime) -> None:
    """Create or renew a watch; renewing keeps the push endpoint set up for the mailbox."""
    for _ in range(2):
        watch = record_get(STORE, WATCH, email)
        if watch is not None:
            record_set(watch, topic_name=topic, label_ids=label_ids)
            record_expire(watch, expires_at)
            return
        try:
            record_create(
                STORE,
                WATCH,
                email,
                account=email,
                data={
                    "topic_name": topic,
                    "label_ids": label_ids,
                    "push_endpoint": "",
                    "audience": "",
                },
                expires_at=expires_at,
            )
            return
        except IntegrityError:  # created meanwhile by a concurrent call: renew that one
            continue


# --- Pub/Sub pushes with a Google-signed OIDC token -----------------------------------------------

SANDBOX_PUSH_SERVICE_ACCOUNT = "gmail-push@sibling-sandbox.iam.gserviceaccount.com"
PUSH_SUBSCRIPTION = "projects/sibling-sandbox/subscriptions/gmail-push"
# What Pub/Sub push requests identify themselves as.
PUBSUB_USER_AGENT = "APIs-Google; (+https://developers.google.com/webmasters/APIs-Google.html)"


def pubsub_oidc_token(
    *, audience: str, email: str = SANDBOX_PUSH_SERVICE_ACCOUNT, **options: Any
) -> str:
    """An RS256 ID token as Pub/Sub attaches to authenticated pushes (see `google_id_token`)."""
    return google_id_token(audience=audience, email=email, **options)


def _publish_time(moment: datetime) -> str:
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def gmail_push_body(
    email_address: str, history_id: int | str, *, message_id: str | None = None
) -> dict:
    """The Pub/Sub push envelope of a Gmail notification.

    `data` is base64url of `{"emailAddress", "historyId"}`; historyId keeps the type given (a JSON
    number for an int, a string for a str), since real notifications have carried both.
    """
    data = json_bytes({"emailAddress": email_address, "historyId": history_id})
    message_id = message_id or str(10**15 + secrets.randbelow(9 * 10**15))
    published = _publish_time(timezone.now())
    return {
        "message": {
            "data": base64.urlsafe_b64encode(data).decode(),
            "messageId": message_id,
            "message_id": message_id,
            "publishTime": published,
            "publish_time": published,
        },
        "subscription": PUSH_SUBSCRIPTION,
    }


def gmail_push_send(
    email_address: str,
    *,
    url: str,
    audience: str,
    history_id: int | str | None = None,
    duplicate: bool = False,
    as_number: bool = False,
    retry_delays: Sequence[float] | None = None,
) -> list[int]:
    """POST a Gmail push to `url` with an OIDC bearer for `audience`.

    `history_id` defaults to the mailbox's current historyId; it is sent as a string, or as a JSON
    number with `as_number`. A duplicate redelivers the same messageId.
    """
    if history_id is None:
        history_id = Mailbox.load(email_address).history_id
    try:
        value: int | str = int(history_id) if as_number else str(history_id)
    except ValueError as err:
        raise WebhookInputError(f"historyId {history_id!r} is not a number") from err
    body = json_bytes(gmail_push_body(email_address, value))
    headers = {
        "Content-Type": "application/json",
        "Authorization": f"Bearer {pubsub_oidc_token(audience=audience)}",
        "User-Agent": PUBSUB_USER_AGENT,
    }
    return deliver(url, body, headers, duplicate=duplicate, retry_delays=retry_delays)


def gmail_push_target(email: str) -> tuple[str, str] | None:
    """(push endpoint, audience) for a mailbox with an active watch, or None.

    What the watch recorded wins; otherwise this app's receiver, with settings.GMAIL_PUSH_AUDIENCE
    (when set) or the endpoint itself as the audience, as Pub/Sub defaults it.
    """
    watch = record_get(STORE, WATCH, email.lower(), live=True)
    if watch is None:
        return None
    push_endpoint = str(watch.data.get("push_endpoint") or "")
    endpoint = push_endpoint or default_receiver("gmail")
    if not endpoint:
        return None
    audience = str(watch.data.get("audience") or "") or (
        "" if push_endpoint else str(getattr(settings, "GMAIL_PUSH_AUDIENCE", "") or "")
    )
    return endpoint, audience or endpoint


def gmail_push_endpoint_set(email: str, url: str, audience: str | None = None) -> bool:
    """Point a watched mailbox's pushes at `url` (the Pub/Sub subscription's push endpoint).

    False when the mailbox has no watch. `audience` defaults to `url`.
    """
    watch = record_get(STORE, WATCH, email.lower())
    return watch is not None and record_set(watch, push_endpoint=url, audience=audience or "")


# --- Faults and the control API -------------------------------------------------------------------

fault_names = ("new_activity", *RATE_LIMIT_403)


def fault_apply(account: str, fault: str, count: int) -> bool:
    """`new_activity`: `count` steps of new, read and deleted mail, then a push when watched."""
    if fault != "new_activity":
        return False
    # The mailbox must exist before its first change, or the change would predate it.
    google_account_ensure(account)
    for _ in range(count):
        activity_tick_add(FAMILY, account)
    activity_webhook_send(lambda: _push_after_activity(account))
    return True


def _push_after_activity(email: str) -> list[int] | None:
    target = gmail_push_target(email)
    if target is None:
        return None
    return gmail_push_send(email, url=target[0], audience=target[1])


def _control_push(body: dict, url: str) -> dict:
    """`email` (required), `history_id` (number or string; default the mailbox's current one),
    `as_number` (bool: historyId as a JSON number), `duplicate` (bool). The OIDC audience is
    settings.GMAIL_PUSH_AUDIENCE when set, else the receiver URL."""
    email = text(body, "email").lower()
    history_id = body.get("history_id")
    if history_id is not None and (
        isinstance(history_id, bool) or not isinstance(history_id, int | str)
    ):
        raise WebhookInputError("history_id must be a number or a string")
    audience = str(getattr(settings, "GMAIL_PUSH_AUDIENCE", "") or "") or url
    statuses = gmail_push_send(
        email,
        url=url,
        audience=audience,
        history_id=history_id,
        duplicate=flag(body, "duplicate"),
        as_number=flag(body, "as_number"),
    )
    return {"statuses": statuses}


webhook_controls = {"push": _control_push}


_API = "google/gmail/v1/users/<str:user_id>"
batch = batch_endpoint(api="gmail/v1", service=SERVICE)

urlpatterns = [
    path(f"{_API}/profile", profile, name="gmail-profile"),
    path(f"{_API}/messages", messages_list, name="gmail-messages"),
    path(f"{_API}/messages/<str:message_id>", message_get, name="gmail-message"),
    path(f"{_API}/history", history_list, name="gmail-history"),
    path(f"{_API}/watch", watch, name="gmail-watch"),
    path(f"{_API}/stop", stop, name="gmail-stop"),
    # Batch requests at the host's root: the guide's /batch/gmail/v1 and the discovery
    # document's batchPath ("batch"), each part dispatched to the views above.
    path("google/batch/gmail/v1", batch, name="gmail-batch"),
    path("google/batch", batch, name="gmail-batch-path"),
]
