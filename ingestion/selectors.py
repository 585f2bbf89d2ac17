"""Reads for staff: the dashboard's figures."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, timedelta

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


@dataclass
class DayBar:
    day: str
    n: int
    pct: int  # height relative to the busiest day shown


def day_labels(days: int) -> list[str]:
    """The last `days` UTC days, oldest first, as YYYY-MM-DD."""
    today = timezone.now().astimezone(UTC).date()
    return [(today - timedelta(days=offset)).isoformat() for offset in range(days - 1, -1, -1)]


def day_bars(per_day: Mapping[str, int], labels: list[str], *, peak: int = 0) -> list[DayBar]:
    """A bar for every day (zero when empty); heights relative to `peak`, by default the
    busiest of these days (charts that share a scale pass theirs)."""
    peak = peak or max((per_day.get(day, 0) for day in labels), default=0) or 1
    return [
        DayBar(day=day, n=per_day.get(day, 0), pct=round(100 * per_day.get(day, 0) / peak))
        for day in labels
    ]


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
