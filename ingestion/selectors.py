"""Reads for staff: the dashboard's figures."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db.models import Count
from django.utils import timezone

from ingestion.models import QuarantinedItem, SyncRun
from ingestion.schemas import CATEGORY_COLLECTIONS
from ingestion.storage import records_collection
from sources.models import UserDataSource


def connections_by_status() -> dict[str, int]:
    rows = UserDataSource.objects.values("status").annotate(n=Count("id")).order_by("status")
    return {row["status"]: row["n"] for row in rows}


def connections_failing(limit: int = 50) -> list[UserDataSource]:
    return list(
        UserDataSource.objects.filter(consecutive_failures__gt=0)
        .exclude(status=UserDataSource.Status.DISCONNECTED)
        .select_related("user")
        .order_by("-consecutive_failures", "-updated_at")[:limit]
    )


def records_per_day(days: int = 14) -> dict[str, dict[str, int]]:
    """{provider: {YYYY-MM-DD: records first ingested that day}} over the last `days` days."""
    since = timezone.now() - timedelta(days=days)
    result: dict[str, dict[str, int]] = {}
    for name in sorted(set(CATEGORY_COLLECTIONS.values())):
        pipeline: list[dict[str, Any]] = [
            {"$match": {"ingested_at": {"$gte": since}}},
            {
                "$group": {
                    "_id": {
                        "provider": "$provider",
                        "day": {"$dateToString": {"format": "%Y-%m-%d", "date": "$ingested_at"}},
                    },
                    "n": {"$sum": 1},
                }
            },
        ]
        for row in records_collection(name).aggregate(pipeline):
            per_day = result.setdefault(row["_id"]["provider"], {})
            per_day[row["_id"]["day"]] = per_day.get(row["_id"]["day"], 0) + row["n"]
    return result


def quarantine_counts() -> dict[str, int]:
    rows = QuarantinedItem.objects.values("provider").annotate(n=Count("id")).order_by("provider")
    return {row["provider"]: row["n"] for row in rows}


def runs_by_outcome(hours: int = 24) -> dict[str, int]:
    since = timezone.now() - timedelta(hours=hours)
    rows = (
        SyncRun.objects.filter(started_at__gte=since)
        .values("outcome")
        .annotate(n=Count("id"))
        .order_by("outcome")
    )
    return {row["outcome"]: row["n"] for row in rows}
