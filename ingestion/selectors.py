"""Reads for staff: the dashboard's figures."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Count, Sum
from django.db.models.functions import TruncDay
from django.utils import timezone

from ingestion.models import QuarantinedItem, SyncRun
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
    """{provider: {YYYY-MM-DD: records created that day}} over the last `days` days, from the
    sync runs (small), not from the record collections (large)."""
    since = timezone.now() - timedelta(days=days)
    rows = (
        SyncRun.objects.filter(started_at__gte=since, created__gt=0)
        .annotate(day=TruncDay("started_at"))
        .values("provider", "day")
        .annotate(n=Sum("created"))
        .order_by("provider", "day")
    )
    result: dict[str, dict[str, int]] = {}
    for row in rows:
        result.setdefault(row["provider"], {})[row["day"].date().isoformat()] = row["n"]
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
