"""Prometheus text exposition of sync health, for operators; never public."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.db.models import Count, Min, Sum
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from ingestion.models import QuarantinedItem, SyncRun
from sibling.queue import broker
from sources.models import UserDataSource


def _labels(**values: str) -> str:
    inner = ",".join(f'{k}="{str(v).replace(chr(34), "")}"' for k, v in values.items())
    return "{" + inner + "}" if inner else ""


def metrics_text() -> str:
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[dict, float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            lines.append(f"{name}{_labels(**labels)} {value:g}")

    runs = (
        SyncRun.objects.values("provider", "outcome")
        .annotate(
            n=Count("id"),
            created=Sum("created"),
            api_calls=Sum("api_calls"),
            rate_limited=Sum("rate_limited"),
        )
        .order_by("provider", "outcome")
    )
    runs = list(runs)
    metric(
        "sibling_sync_runs_total",
        "counter",
        "Sync runs by outcome.",
        [({"provider": r["provider"], "outcome": r["outcome"]}, r["n"]) for r in runs],
    )
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
        metric(
            name,
            "counter",
            help_text,
            [({"provider": p}, t[key]) for p, t in sorted(by_provider.items())],
        )
    quarantined = (
        QuarantinedItem.objects.values("provider").annotate(n=Count("id")).order_by("provider")
    )
    metric(
        "sibling_quarantined_items",
        "gauge",
        "Items in quarantine.",
        [({"provider": q["provider"]}, q["n"]) for q in quarantined],
    )
    connections = (
        UserDataSource.objects.values("provider", "status")
        .annotate(n=Count("id"))
        .order_by("provider")
    )
    metric(
        "sibling_connections",
        "gauge",
        "Connections by status.",
        [({"provider": c["provider"], "status": c["status"]}, c["n"]) for c in connections],
    )
    now = timezone.now()
    oldest = UserDataSource.objects.filter(
        status=UserDataSource.Status.ACTIVE, next_sync_at__lte=now
    ).aggregate(oldest=Min("next_sync_at"))["oldest"]
    metric(
        "sibling_oldest_due_connection_age_seconds",
        "gauge",
        "How long the longest-waiting due connection has waited.",
        [({}, (now - oldest).total_seconds() if oldest else 0)],
    )
    metric(
        "sibling_queue_depth",
        "gauge",
        "Tasks waiting in the worker queue.",
        [({}, broker().queue_size())],
    )
    return "\n".join(lines) + "\n"


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
    return HttpResponse(metrics_text(), content_type="text/plain; version=0.0.4")
