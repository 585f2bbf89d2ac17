"""The schema registry: which kinds of record exist, where they live, and what they hold.

A kind belongs to a category, and each category is one collection (ExternalData, BehavioralData,
VolunteeredData). Adding a kind, or a category such as InferredData, is a registration here; the
pipeline (processors, storage, reprocessing) reads this registry and needs no change.

Providers declare the kinds they produce (``Provider.kinds``: their own in their package's
``kinds.py``, shared ones in ``sources.providers.kinds``); the registry collects them from the
provider registry the first time a kind is looked up. The kinds Sibling's own apps send (the
events API) are registered below.

Every field of a record's data is personal and stored encrypted with the person's data key
(``ingestion.storage``): there is no per-field choice of what stays readable. Only the envelope
(who, which provider and kind, the external id, when) is plaintext.

An InvalidItem's message is stored as a quarantine reason, which is not encrypted: it names the
kind, the field and the rule that failed, never the value.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

CATEGORY_COLLECTIONS: dict[str, str] = {
    "external": "external_data",
    "behavioral": "behavioral_data",
    "volunteered": "volunteered_data",
}


class InvalidItem(ValueError):
    """An item that does not fit its schema; the reason is stored with it in quarantine."""


@dataclass(frozen=True)
class FieldSpec:
    """One field of a kind's data. All of them are sealed alike; the spec only validates."""

    type: type | tuple[type, ...]
    required: bool = True
    nullable: bool = False


@dataclass(frozen=True)
class Kind:
    name: str
    category: str
    fields: dict[str, FieldSpec]
    schema_version: int = 1
    # Rules beyond types (ranges, orderings), given the checked data; raises InvalidItem.
    check: Callable[[dict[str, Any]], None] | None = None

    @property
    def collection(self) -> str:
        return CATEGORY_COLLECTIONS[self.category]


@dataclass
class Record:
    """One normalised record as a processor produces it (before encryption)."""

    kind: str
    external_id: str
    occurred_at: datetime
    data: dict[str, Any]


@dataclass
class Quarantined:
    reason: str
    item: Any
    kind: str | None = None


@dataclass
class ProcessedPage:
    records: list[Record] = field(default_factory=list)
    removed: list[tuple[str, str]] = field(default_factory=list)  # (kind, external_id)
    quarantined: list[Quarantined] = field(default_factory=list)


_KINDS: dict[str, Kind] = {}
_providers_collected = False


def kind_register(kind: Kind) -> Kind:
    if kind.category not in CATEGORY_COLLECTIONS:
        raise ValueError(f"unknown category {kind.category!r}")
    _KINDS[kind.name] = kind
    return kind


def category_register(category: str, collection: str) -> None:
    """A new category of records (InferredData, RelationalData) with a collection of its own."""
    CATEGORY_COLLECTIONS[category] = collection


def provider_kinds_collect() -> None:
    """Register every registered provider's declared kinds (once; later calls do nothing).

    A declared kind whose category is unknown, or a name two providers declare differently, is
    left out here: the system check (sources.checks) reports it at startup.
    """
    global _providers_collected
    if _providers_collected:
        return
    from sources.providers import PROVIDERS

    declared: dict[str, Kind] = {}
    for provider in PROVIDERS.values():
        for kind in provider.kinds:
            if kind.category in CATEGORY_COLLECTIONS and declared.get(kind.name, kind) == kind:
                declared[kind.name] = kind
    for kind in declared.values():
        _KINDS.setdefault(kind.name, kind)
    _providers_collected = True


def kind_get(name: str) -> Kind:
    provider_kinds_collect()
    try:
        return _KINDS[name]
    except KeyError:
        # The name may come from a client (the events API): it is not repeated.
        raise InvalidItem("unknown kind (not a registered kind)") from None


def kinds_all() -> list[Kind]:
    provider_kinds_collect()
    return list(_KINDS.values())


_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")


def field_name_like(name: Any) -> bool:
    """A short identifier, as field names are (a key sent by a client may be anything)."""
    return isinstance(name, str) and _FIELD_NAME.fullmatch(name) is not None


def field_names_shown(names: Iterable[Any]) -> str:
    """Field names for a reason that is stored in plaintext: the names that look like field
    names, and only a count of the other keys (a client's key could be a value in disguise)."""
    names = list(names)
    shown = sorted(n for n in names if field_name_like(n))[:10]
    others = len(names) - len(shown)
    parts = [", ".join(shown)] if shown else []
    if others:
        parts.append(f"{others} other key{'s' if others > 1 else ''}")
    return " and ".join(parts)


def as_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def data_validate(kind: Kind, data: dict[str, Any]) -> dict[str, Any]:
    """The data of one record checked against its kind: types, required fields, no strays."""
    if not isinstance(data, dict):
        raise InvalidItem(f"{kind.name}: data is not an object")
    unknown = set(data) - set(kind.fields)
    if unknown:
        raise InvalidItem(f"{kind.name}: unexpected fields {field_names_shown(unknown)}")
    clean: dict[str, Any] = {}
    for name, spec in kind.fields.items():
        if name not in data:
            if spec.required:
                raise InvalidItem(f"{kind.name}: missing {name}")
            continue
        value = data[name]
        if value is None:
            if not spec.nullable:
                raise InvalidItem(f"{kind.name}: {name} is null")
        elif isinstance(value, bool) and spec.type is not bool and bool not in _types(spec):
            raise InvalidItem(f"{kind.name}: {name} is a boolean")
        elif not isinstance(value, spec.type):
            expected = "/".join(t.__name__ for t in _types(spec))
            raise InvalidItem(f"{kind.name}: {name} is not {expected}")
        if isinstance(value, datetime):
            value = as_utc(value)
        elif isinstance(value, date) and not isinstance(value, datetime):
            value = value.isoformat()  # BSON has no date-only type
        clean[name] = value
    return clean


def record_validate(record: Record) -> Record:
    kind = kind_get(record.kind)
    if not record.external_id or not isinstance(record.external_id, str):
        raise InvalidItem(f"{kind.name}: missing external id")
    if not isinstance(record.occurred_at, datetime):
        raise InvalidItem(f"{kind.name}: occurred_at is not a datetime")
    data = data_validate(kind, record.data)
    if kind.check is not None:
        kind.check(data)
    return Record(
        kind=record.kind,
        external_id=record.external_id,
        occurred_at=as_utc(record.occurred_at),
        data=data,
    )


def _types(spec: FieldSpec) -> tuple[type, ...]:
    return spec.type if isinstance(spec.type, tuple) else (spec.type,)


NUMBER = (int, float)
S = FieldSpec
# A source's offset from UTC (``utc_offset_min`` in a record's data) lies within a day; the
# world's zones today span -12 to +14 hours.
UTC_OFFSET_MAX_MIN = 24 * 60 - 1

# --- Sent by Sibling's own apps (the events API) -----------------------------------------------


def _int_between(data: dict[str, Any], name: str, low: int, high: int, kind: str) -> None:
    value = data.get(name)
    if value is not None and not low <= value <= high:
        raise InvalidItem(f"{kind}: {name} must be between {low} and {high}")


def _mood_rating_check(data: dict[str, Any]) -> None:
    _int_between(data, "rating", 1, 5, "mood_rating")


def _note_check(data: dict[str, Any]) -> None:
    if any(not isinstance(tag, str) for tag in data.get("tags") or []):
        raise InvalidItem("note: tags must be strings")


def _sleep_log_check(data: dict[str, Any]) -> None:
    if data["end"] <= data["start"]:
        raise InvalidItem("sleep_log: end must be after start")
    _int_between(data, "quality", 1, 5, "sleep_log")
    _int_between(data, "utc_offset_min", -UTC_OFFSET_MAX_MIN, UTC_OFFSET_MAX_MIN, "sleep_log")


def _screen_time_check(data: dict[str, Any]) -> None:
    try:
        day = date.fromisoformat(data["date"])
    except ValueError:
        raise InvalidItem("screen_time: date is not YYYY-MM-DD") from None
    # fromisoformat also takes "20240105" and week dates; only the extended form is meant.
    if day.isoformat() != data["date"]:
        raise InvalidItem("screen_time: date is not YYYY-MM-DD")
    if data["seconds"] < 0:
        raise InvalidItem("screen_time: seconds must not be negative")


kind_register(
    Kind(
        "mood_rating",
        "volunteered",
        {
            "rating": S(int),
            "note": S(str, required=False, nullable=True),
        },
        check=_mood_rating_check,
    )
)
kind_register(
    Kind(
        "note",
        "volunteered",
        {
            "text": S(str),
            "tags": S(list, required=False),
        },
        check=_note_check,
    )
)
kind_register(
    Kind(
        "sleep_log",
        "volunteered",
        {
            "start": S(datetime),
            "end": S(datetime),
            "quality": S(int, required=False),
            # Where it was entered: the offset from UTC, in minutes, of the person's zone then.
            "utc_offset_min": S(int, required=False, nullable=True),
        },
        check=_sleep_log_check,
    )
)
kind_register(
    Kind(
        "screen_time",
        "behavioral",
        {
            "date": S(str),
            "app": S(str),
            "seconds": S(int),
            "device": S(str, required=False),
        },
        check=_screen_time_check,
    )
)
