"""Prometheus exposition of sync health, for operators; never public.

The numbers live in the database (runs, quarantine, connections) and the queue, not in a
process: a collector reads them at scrape time, so every web process answers the same. It has a
registry of its own (not prometheus_client's global one, which would add this process's Python
metrics), and prometheus_client writes the text format, escaping label values.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator

from django.conf import settings
from django.db.models import Count, Min, Sum
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ingestion.models import QuarantinedItem, SyncRun
from sibling.queue import broker
from sources.models import UserDataSource


class SyncHealthCollector(Collector):
    """The sync health metric families, read from the database on every collect."""

    def collect(self) -> Iterator[Metric]:
        runs = list(
            SyncRun.objects.values("provider", "outcome")
            .annotate(
                n=Count("id"),
                created=Sum("created"),
                api_calls=Sum("api_calls"),
                rate_limited=Sum("rate_limited"),
            )
            .order_by("provider", "outcome")
        )
        family = CounterMetricFamily(
            "sibling_sync_runs_total", "Sync runs by outcome.", labels=["provider", "outcome"]
        )
        for r in runs:
            family.add_metric([r["provider"], r["outcome"]], r["n"])
        yield family

        by_provider: dict[str, dict[str, float]] = {}
        for r in runs:
            totals = by_provider.setdefault(
                r["provider"], {"created": 0, "api_calls": 0, "rate_limited": 0, "deferred": 0}
            )
            totals["created"] += r["created"] or 0
            totals["api_calls"] += r["api_calls"] or 0
            totals["rate_limited"] += r["rate_limited"] or 0
            if r["outcome"] == SyncRun.Outcome.DEFERRED:
                totals["deferred"] += r["n"]
        for key, name, help_text in (
            ("created", "sibling_records_ingested_total", "Records created by syncs."),
            ("api_calls", "sibling_provider_api_calls_total", "Provider API calls made by syncs."),
            ("rate_limited", "sibling_provider_rate_limited_total", "429 and quota answers."),
            ("deferred", "sibling_sync_deferrals_total", "Syncs deferred until a limit resets."),
        ):
            family = CounterMetricFamily(name, help_text, labels=["provider"])
            for provider, totals in sorted(by_provider.items()):
                family.add_metric([provider], totals[key])
            yield family

        family = GaugeMetricFamily(
            "sibling_quarantined_items", "Items in quarantine.", labels=["provider"]
        )
        quarantined = (
            QuarantinedItem.objects.values("provider").annotate(n=Count("id")).order_by("provider")
        )
        for q in quarantined:
            family.add_metric([q["provider"]], q["n"])
        yield family

        family = GaugeMetricFamily(
            "sibling_connections", "Connections by status.", labels=["provider", "status"]
        )
        connections = (
            UserDataSource.objects.values("provider", "status")
            .annotate(n=Count("id"))
            .order_by("provider", "status")
        )
        for c in connections:
            family.add_metric([c["provider"], c["status"]], c["n"])
        yield family

        now = timezone.now()
        oldest = UserDataSource.objects.filter(
            status=UserDataSource.Status.ACTIVE, next_sync_at__lte=now
        ).aggregate(oldest=Min("next_sync_at"))["oldest"]
        yield GaugeMetricFamily(
            "sibling_oldest_due_connection_age_seconds",
            "How long the longest-waiting due connection has waited.",
            value=(now - oldest).total_seconds() if oldest else 0,
        )
        yield GaugeMetricFamily(
            "sibling_queue_depth", "Tasks waiting in the worker queue.", value=broker().queue_size()
        )


def metrics_text() -> str:
    """The exposition text, read from the database now."""
    # auto_describe=False: registering must not collect (that would query at registration).
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SyncHealthCollector())
    return generate_latest(registry).decode()


def _authorized(request: HttpRequest) -> bool:
    if request.user.is_authenticated and request.user.is_staff:
        return True
    token = settings.SIBLING_METRICS_TOKEN
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    return bool(token) and hmac.compare_digest(given.encode(), token.encode())


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    if not _authorized(request):
        return HttpResponse("Forbidden\n", status=403, content_type="text/plain")
    return HttpResponse(metrics_text(), content_type=CONTENT_TYPE_LATEST)
