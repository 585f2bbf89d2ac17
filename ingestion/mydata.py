"""Reads for a person's own "My data" page: counts, latest records, records per day.

Every query is filtered by the person first: every record index starts with ``user``, so each
read stays within that person's records. Counts and the chart read only the plaintext envelope
(provider, kind, occurred_at). Every value of a record is sealed, and the records are read
through the plain client, which does not decrypt: the latest records are decrypted here, through
``record_decode``, under the owner's key (a value sealed under anyone else's key is refused
rather than shown).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.utils import timezone
from pymongo import DESCENDING

from ingestion.schemas import CATEGORY_COLLECTIONS, InvalidItem, kind_get
from ingestion.selectors import DayBar, day_bars, day_labels
from ingestion.storage import record_decode, records_collection
from sources.providers import ProviderNotFound, get_provider

LATEST_PER_KIND = 10
CHART_DAYS = 30

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
}
FALLBACK_FIELD_COUNT = 4
OWN_PROVIDER_LABEL = "Added by you"  # records of Sibling's own apps and of this page


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


def latest_records(
    *, user: AbstractBaseUser, kinds: list[tuple[str, str]], per_kind: int = LATEST_PER_KIND
) -> dict[str, list[LatestRecord]]:
    """{kind: its newest records, decrypted}, for the (collection, kind) pairs the person has.

    One query per kind on the (user, kind, occurred_at) index, so each reads only what it shows.
    """
    result: dict[str, list[LatestRecord]] = {}
    for collection, kind in kinds:
        cursor = (
            records_collection(collection)
            .find({"user": user.pk, "kind": kind}, {"raw_page": 0})
            .sort("occurred_at", DESCENDING)
            .limit(per_kind)
        )
        result[kind] = [
            LatestRecord(
                occurred_at=document["occurred_at"],
                kind=kind,
                provider=document["provider"],
                details=_details(kind, record_decode(document, owner_id=user.pk)["data"]),
            )
            for document in cursor
        ]
    return result


def records_per_day(*, user: AbstractBaseUser, days: int = CHART_DAYS) -> list[DayBar]:
    """The person's records per UTC day (by ``occurred_at``) over the last ``days`` days, oldest
    first, every day present (zero when empty); bar heights relative to the busiest day."""
    today = timezone.now().astimezone(UTC).date()
    first = today - timedelta(days=days - 1)
    since = datetime(first.year, first.month, first.day, tzinfo=UTC)
    per_day: dict[str, int] = {}
    pipeline: list[dict[str, Any]] = [
        {"$match": {"user": user.pk, "occurred_at": {"$gte": since}}},
        {
            "$group": {
                "_id": {"$dateToString": {"format": "%Y-%m-%d", "date": "$occurred_at"}},
                "n": {"$sum": 1},
            }
        },
    ]
    for collection in CATEGORY_COLLECTIONS.values():
        for row in records_collection(collection).aggregate(pipeline):
            per_day[row["_id"]] = per_day.get(row["_id"], 0) + row["n"]
    return day_bars(per_day, day_labels(days))


def _details(kind: str, data: dict[str, Any]) -> list[tuple[str, str]]:
    names = SUMMARY_FIELDS.get(kind)
    if names is None:
        try:
            names = tuple(kind_get(kind).fields)[:FALLBACK_FIELD_COUNT]
        except InvalidItem:  # a kind no longer registered: show what it holds
            names = tuple(data)[:FALLBACK_FIELD_COUNT]
    return [
        (name.replace("_", " "), _shown(data[name]))
        for name in names
        if data.get(name) not in (None, "", [])
    ]


def _shown(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)
