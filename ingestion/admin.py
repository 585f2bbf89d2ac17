import json
from datetime import timedelta

from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.html import format_html

from ingestion import selectors
from ingestion.models import QuarantinedItem, SyncRun, WebhookEvent
from ingestion.webhooks import webhook_event_enqueue


@admin.register(SyncRun)
class SyncRunAdmin(admin.ModelAdmin):
    list_display = (
        "started_at",
        "provider",
        "connection_id",
        "trigger",
        "outcome",
        "fetched",
        "created",
        "updated",
        "deleted",
        "quarantined",
        "api_calls",
        "duration",
        "error_class",
    )
    list_filter = ("provider", "outcome", "trigger")
    date_hierarchy = "started_at"
    readonly_fields = [f.name for f in SyncRun._meta.fields]

    @admin.display(description="seconds")
    def duration(self, obj: SyncRun) -> str:
        return "" if obj.duration_s is None else f"{obj.duration_s:.1f}"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(QuarantinedItem)
class QuarantinedItemAdmin(admin.ModelAdmin):
    # The item itself is personal data; its reason is what staff need.
    list_display = ("created_at", "provider", "stream", "kind", "reason")
    list_filter = ("provider", "kind")
    exclude = ("item",)
    readonly_fields = ("user", "connection", "provider", "stream", "kind", "reason", "run")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


class SyncRunInline(admin.TabularInline):
    model = SyncRun
    fields = (
        "started_at",
        "trigger",
        "outcome",
        "fetched",
        "created",
        "updated",
        "deleted",
        "quarantined",
        "api_calls",
        "error_class",
        "error_message",
    )
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    ordering = ("-started_at",)

    def get_queryset(self, request: HttpRequest):  # noqa: ANN201
        return super().get_queryset(request).order_by("-started_at")


@staff_member_required
def dashboard(request: HttpRequest) -> HttpResponse:
    days = 14
    today = timezone.now().date()
    labels = [(today - timedelta(days=offset)).isoformat() for offset in range(days - 1, -1, -1)]
    per_day = selectors.records_per_day(days)
    peak = max((n for series in per_day.values() for n in series.values()), default=0) or 1
    chart = [
        {
            "provider": provider,
            "bars": [
                {"day": day, "n": series.get(day, 0), "pct": round(100 * series.get(day, 0) / peak)}
                for day in labels
            ],
            "total": sum(series.values()),
        }
        for provider, series in sorted(per_day.items())
    ]
    context = {
        **admin.site.each_context(request),
        "title": "Sync health",
        "by_status": selectors.connections_by_status(),
        "failing": selectors.connections_failing(),
        "chart": chart,
        "quarantine": selectors.quarantine_counts(),
        "runs": selectors.runs_by_outcome(),
    }
    return render(request, "admin/ingestion/dashboard.html", context)


@admin.register(WebhookEvent)
class WebhookEventAdmin(admin.ModelAdmin):
    list_display = (
        "received_at",
        "provider",
        "event_type",
        "status",
        "verified",
        "deliveries",
        "attempts",
        "error",
    )
    list_filter = ("provider", "status", "verified")
    date_hierarchy = "received_at"
    exclude = ("payload",)
    readonly_fields = (
        "provider",
        "event_type",
        "dedup_key",
        "received_at",
        "verified",
        "status",
        "deliveries",
        "attempts",
        "error",
        "user",
        "connection",
        "processed_at",
    )
    actions = ("replay",)

    @admin.display(description="payload")
    def payload_view(self, obj: WebhookEvent) -> str:
        if obj.payload is None:
            return "not kept"
        return format_html("<pre>{}</pre>", json.dumps(obj.payload, indent=2, default=str))

    @admin.display(description="payload")
    def payload_hidden(self, obj: WebhookEvent) -> str:
        return "hidden: encrypted, shown only to staff allowed to see webhook payloads"

    def get_readonly_fields(self, request: HttpRequest, obj: object = None) -> tuple:
        allowed = request.user.has_perm("ingestion.view_webhook_payload")
        return (*self.readonly_fields, "payload_view" if allowed else "payload_hidden")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Replay (process again)")
    def replay(self, request: HttpRequest, queryset: QuerySet) -> None:
        replayed = 0
        for event in queryset.exclude(status=WebhookEvent.Status.REJECTED):
            WebhookEvent.objects.filter(pk=event.pk).update(status=WebhookEvent.Status.ACCEPTED)
            webhook_event_enqueue(event)
            replayed += 1
        self.message_user(request, f"{replayed} events queued for processing again.")
