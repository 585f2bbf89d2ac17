"""Events sent by Sibling's own apps: checked at once, stored as one batch, turned into records.

A batch from ``POST /api/events/`` is checked event by event against the kinds' schemas; the
valid events are stored as one WebhookEvent (source ``events``) and processed by
:func:`event_handle` like any pushed event, the invalid ones are answered and kept in quarantine.
Records are keyed by the client's event id, so a resent batch, or a batch processed twice, writes
nothing new.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import bson
import bson.errors
from django.contrib.auth.base_user import AbstractBaseUser
from django.utils.crypto import salted_hmac

from ingestion.fence import data_key_ensure
from ingestion.models import QuarantinedItem, WebhookEvent
from ingestion.schemas import (
    InvalidItem,
    ProcessedPage,
    Quarantined,
    Record,
    as_utc,
    field_name_like,
    kind_get,
    kinds_all,
    record_validate,
)
from ingestion.storage import page_store
from ingestion.webhooks import IncomingEvent, webhook_event_store
from outbound.emit import records_changed_emit

SOURCE = "events"  # the WebhookEvent provider, named in ingestion.webhooks.HANDLERS
PROVIDER = "sibling_app"  # the records' provider
STREAM = "events"
EVENT_CATEGORIES = ("behavioral", "volunteered")
MAX_EVENTS = 500
MAX_ID_LENGTH = 200
MAX_REASON_LENGTH = 300
EVENT_KEYS = ("id", "kind", "occurred_at", "data")

# RFC 3339 date-time: an offset is required, so no app's local time is taken for UTC.
_RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})$"
)


@dataclass
class Rejection:
    index: int
    id: str | None
    reason: str


@dataclass
class BatchResult:
    accepted: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    event: WebhookEvent | None = None
    created: bool = False


def event_kinds() -> list[str]:
    """The kinds apps may send: every registered kind of a behavioral or volunteered category."""
    return sorted(kind.name for kind in kinds_all() if kind.category in EVENT_CATEGORIES)


def rfc3339_parse(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError("not a string")
    match = _RFC3339.match(value)
    if match is None:
        raise ValueError("not an RFC 3339 date-time")
    day, time, fraction, offset = match.groups()
    # fromisoformat takes at most microseconds; finer digits are dropped.
    fraction = f".{fraction[:6].ljust(6, '0')}" if fraction else ""
    offset = "+00:00" if offset in ("Z", "z") else offset
    try:
        return as_utc(datetime.fromisoformat(f"{day}T{time}{fraction}{offset}"))
    except OverflowError:  # year 9999 or 0001 shifted out of range by its offset
        raise ValueError("out of range") from None


def storable_check(value: Any, path: str) -> None:
    """Raise InvalidItem for what JSON allows and MongoDB cannot store as sent: integers beyond
    64 bits, non-finite numbers, and object keys that are operators, dotted or hold NUL."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise InvalidItem(f"{path} is out of range")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidItem(f"{path} is not a finite number")
    elif isinstance(value, list):
        for index, element in enumerate(value):
            storable_check(element, f"{path}[{index}]")
    elif isinstance(value, dict):
        for key, element in value.items():
            # Reasons are kept in plaintext: a key that is not a plain field name is not quoted.
            if not isinstance(key, str) or key.startswith("$") or "." in key or "\x00" in key:
                raise InvalidItem(
                    f"{path} has a key that cannot be stored (it starts with $, or holds a dot "
                    "or NUL)"[:200]
                )
            storable_check(element, f"{path}.{key}" if field_name_like(key) else f"{path}.*")


def event_record(item: Any) -> Record:
    """One event as sent (JSON) as a validated record; InvalidItem says what is wrong."""
    if not isinstance(item, dict):
        raise InvalidItem("event is not an object")
    client_id = item.get("id")
    if not isinstance(client_id, str) or not client_id.strip():
        raise InvalidItem("id is missing or not a non-empty string")
    if len(client_id) > MAX_ID_LENGTH:
        raise InvalidItem(f"id is longer than {MAX_ID_LENGTH} characters")
    name = item.get("kind")
    if not isinstance(name, str):
        raise InvalidItem("kind is missing or not a string")
    kind = kind_get(name)
    if kind.category not in EVENT_CATEGORIES:
        raise InvalidItem(f"kind {name!r} cannot be sent as an event")
    try:
        occurred_at = rfc3339_parse(item.get("occurred_at"))
    except ValueError:
        raise InvalidItem("occurred_at is missing or not an RFC 3339 date-time") from None
    data = item.get("data")
    if not isinstance(data, dict):
        raise InvalidItem(f"{name}: data is missing or not an object")
    storable_check(data, f"{name}: data")
    parsed = dict(data)
    for field_name, spec in kind.fields.items():
        types = spec.type if isinstance(spec.type, tuple) else (spec.type,)
        # JSON has no date-time type: the kind's datetime fields arrive as strings.
        if datetime in types and isinstance(parsed.get(field_name), str):
            try:
                parsed[field_name] = rfc3339_parse(parsed[field_name])
            except ValueError:
                raise InvalidItem(f"{name}: {field_name} is not an RFC 3339 date-time") from None
    return record_validate(
        Record(kind=name, external_id=client_id, occurred_at=occurred_at, data=parsed)
    )


def batch_dedup_key(user_id: Any, event_ids: list[str]) -> str:
    # JSON keeps the parts apart: no id can be mistaken for a separator.
    material = json.dumps([str(user_id), sorted(event_ids)], separators=(",", ":"))
    return hashlib.sha256(material.encode()).hexdigest()


def events_accept(*, user: AbstractBaseUser, events: list[Any]) -> BatchResult:
    """Check each event, store the valid ones as one batch and quarantine the others."""
    # The person's own write: the one place (with connecting) that may create their data key;
    # refused once their erasure has begun.
    data_key_ensure(user.pk)
    result = BatchResult()
    valid: list[dict[str, Any]] = []
    seen: set[str] = set()
    quarantined: list[Quarantined] = []
    for index, item in enumerate(events):
        client_id = item.get("id") if isinstance(item, dict) else None
        shown_id = (
            client_id if isinstance(client_id, str) and len(client_id) <= MAX_ID_LENGTH else None
        )
        try:
            event_record(item)
            if client_id in seen:
                raise InvalidItem("id repeats an earlier event of this batch")
        except InvalidItem as err:
            reason = str(err)[:MAX_REASON_LENGTH]
            result.rejected.append(Rejection(index=index, id=shown_id, reason=reason))
            label = _event_label(user.pk, shown_id) if shown_id else f"#{index}"
            quarantined.append(
                Quarantined(
                    reason=f"event {label}: {reason}"[:MAX_REASON_LENGTH],
                    item=_quarantinable(item),
                    kind=_kind_label(item),
                )
            )
            continue
        seen.add(client_id)
        valid.append({key: item[key] for key in EVENT_KEYS})
    result.accepted = len(valid)
    if valid:
        result.event, result.created = _batch_store(user=user, events=valid)
    if quarantined:
        _quarantine_new(user=user, items=quarantined)
    return result


def _batch_store(*, user: AbstractBaseUser, events: list[dict[str, Any]]) -> tuple[Any, bool]:
    incoming = IncomingEvent(
        dedup_key=batch_dedup_key(user.pk, [event["id"] for event in events]),
        event_type="batch",
        payload=events,
        user_id=user.pk,
    )
    return webhook_event_store(provider=SOURCE, event=incoming)


def _quarantine_new(*, user: AbstractBaseUser, items: list[Quarantined]) -> None:
    """Quarantine rejected events, except those a resent batch already quarantined."""
    known = set(
        QuarantinedItem.objects.filter(
            user=user,
            provider=PROVIDER,
            stream=STREAM,
            reason__in=[item.reason for item in items],
        ).values_list("reason", flat=True)
    )
    fresh = [item for item in items if item.reason not in known]
    if fresh:
        page_store(
            connection=None,
            user_id=user.pk,
            provider=PROVIDER,
            stream=STREAM,
            processed=ProcessedPage(quarantined=fresh),
        )


def _quarantinable(item: Any) -> Any:
    """The item as sent, or as JSON text when BSON cannot hold it (it is kept either way)."""
    try:
        bson.encode({"item": item})
    except (bson.errors.InvalidDocument, OverflowError):
        return json.dumps(item)
    return item


def _event_label(user_id: Any, client_id: str) -> str:
    """An event in a quarantine reason (kept in plaintext): a keyed digest of its id, not the id,
    which a client may have made of personal values. The same event gives the same label, so a
    resent batch is recognised."""
    digest = salted_hmac("sibling.event-label", f"{user_id}:{client_id}", algorithm="sha256")
    return f"id~{digest.hexdigest()[:12]}"


def _kind_label(item: Any) -> str | None:
    kind = item.get("kind") if isinstance(item, dict) else None
    # Only a registered kind's name is kept in plaintext.
    registered = isinstance(kind, str) and any(k.name == kind for k in kinds_all())
    return kind if registered else None


def event_handle(event: WebhookEvent) -> None:
    """Turn a stored batch into records of its person (the handler named in HANDLERS)."""
    if event.user_id is None:
        raise ValueError("the batch names no person")
    page = ProcessedPage()
    for item in event.payload or []:
        try:
            page.records.append(event_record(item))
        except InvalidItem as err:
            # Valid when it arrived; a kind changed since. Kept, not lost.
            page.quarantined.append(
                Quarantined(reason=str(err)[:MAX_REASON_LENGTH], item=item, kind=_kind_label(item))
            )
    counts = page_store(
        connection=None,
        user_id=event.user_id,
        provider=PROVIDER,
        stream=STREAM,
        processed=page,
    )
    # What the batch changed, stored for subscribers (at most one insert; never raises).
    records_changed_emit(user_id=event.user_id, provider=PROVIDER, counts=counts)
    # The records are the durable copy: the batch itself is not kept. The event stays (without
    # its payload) until it expires, so a redelivery is still recognised meanwhile; a batch
    # resent after that is processed again, which writes nothing new (records are keyed by the
    # client's ids).
    WebhookEvent.objects.filter(pk=event.pk).update(payload=None)
    event.payload = None


def unicode_invalid_where(value: Any, path: str) -> str | None:
    """Where in a parsed JSON value a string (or an object key) is not valid Unicode (a lone
    surrogate, which JSON can escape and BSON cannot store), or None. Keys are not quoted."""
    if isinstance(value, str):
        return None if _is_unicode(value) else path
    if isinstance(value, list):
        for index, element in enumerate(value):
            where = unicode_invalid_where(element, f"{path}[{index}]")
            if where is not None:
                return where
    elif isinstance(value, dict):
        for key, element in value.items():
            if isinstance(key, str) and not _is_unicode(key):
                return f"{path} (an object key)"
            # Told only to the sender (this is not stored): their own key, shortened.
            where = unicode_invalid_where(element, f"{path}.{str(key)[:40]}")
            if where is not None:
                return where
    return None


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
