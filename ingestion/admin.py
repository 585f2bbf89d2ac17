import json
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth import get_user_model
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.html import format_html

from ingestion import selectors
from ingestion.erasure import person_erase
from ingestion.export import export_response
from ingestion.ledger import Action, ledger_of, ledger_record
from ingestion.models import AccessLedgerEntry, QuarantinedItem, SyncRun, WebhookEvent
from ingestion.schemas import CATEGORY_COLLECTIONS
from ingestion.storage import records_collection
from ingestion.webhooks import webhook_event_enqueue
from sibling.lookups import object_or_404
from sources.models import UserDataSource


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
    labels = selectors.day_labels(days)
    per_day = selectors.records_per_day(days)
    # One scale for every provider, so their bars compare.
    peak = max((n for series in per_day.values() for n in series.values()), default=0)
    chart = [
        {
            "provider": provider,
            "bars": selectors.day_bars(series, labels, peak=peak),
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
    change_form_template = "admin/ingestion/webhookevent/change_form.html"

    @admin.display(description="payload")
    def payload_view(self, obj: WebhookEvent) -> str:
        if obj.payload is None:
            return "not kept"
        return format_html("<pre>{}</pre>", json.dumps(obj.payload, indent=2, default=str))

    @admin.display(description="payload")
    def payload_hidden(self, obj: WebhookEvent) -> str:
        return "hidden: encrypted; staff allowed to see webhook payloads give a reason to see it"

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        # Personal data is shown only with a reason, and every showing is in the ledger.
        reason = request.GET.get("reason", "").strip()
        allowed = request.user.has_perm("ingestion.view_webhook_payload")
        request.payload_revealed = False  # type: ignore[attr-defined]
        if reason and allowed:
            event = self.get_object(request, object_id)
            if event is not None:
                ledger_record(
                    subject_id=event.user_id,
                    actor=request.user,
                    action=Action.VIEW,
                    scope=f"webhook event {event.pk} payload",
                    reason=reason,
                )
                request.payload_revealed = True  # type: ignore[attr-defined]
        context = {**(extra_context or {}), "can_reveal": allowed}
        return super().change_view(request, object_id, form_url, extra_context=context)

    def get_readonly_fields(self, request: HttpRequest, obj: object = None) -> tuple:
        shown = getattr(request, "payload_revealed", False)
        return (*self.readonly_fields, "payload_view" if shown else "payload_hidden")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Replay (process again)")
    def replay(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        reason = request.POST.get("reason", "").strip()
        if not reason:
            return render(
                request,
                "admin/ingestion/webhookevent/replay_reason.html",
                {
                    **self.admin_site.each_context(request),
                    "title": "Why replay these events?",
                    "events": queryset,
                    "opts": self.model._meta,
                },
            )
        replayed = 0
        for event in queryset.exclude(status=WebhookEvent.Status.REJECTED):
            ledger_record(
                subject_id=event.user_id,
                actor=request.user,
                action=Action.REPLAY,
                scope=f"webhook event {event.pk}",
                reason=reason,
            )
            WebhookEvent.objects.filter(pk=event.pk).update(status=WebhookEvent.Status.ACCEPTED)
            webhook_event_enqueue(event)
            replayed += 1
        self.message_user(request, f"{replayed} events queued for processing again.")
        return None


@admin.register(AccessLedgerEntry)
class AccessLedgerEntryAdmin(admin.ModelAdmin):
    list_display = ("created_at", "action", "scope", "actor", "reason")
    list_filter = ("action", "actor_is_staff")
    readonly_fields = (
        "subject",
        "actor",
        "actor_is_staff",
        "action",
        "scope",
        "reason",
        "created_at",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@staff_member_required
def privacy_search(request: HttpRequest) -> HttpResponse:
    """Find a person (by email or username) to answer a data request."""
    query = request.GET.get("q", "").strip()
    people = []
    if query:
        people = list(
            get_user_model()
            .objects.filter(Q(email__iexact=query) | Q(username=query))
            .order_by("username")[:20]
        )
    context = {**admin.site.each_context(request), "title": "Privacy", "query": query}
    return render(request, "admin/ingestion/privacy_search.html", {**context, "people": people})


@staff_member_required
def person_privacy(request: HttpRequest, user_id: str) -> HttpResponse:
    """A person's privacy view: connections, record counts, ledger; export and erasure."""
    person = object_or_404(get_user_model().objects.all(), user_id, what="person")
    error = ""
    if request.method == "POST":
        reason = request.POST.get("reason", "").strip()
        if request.POST.get("action") == "export":
            if not reason:
                error = "Give the reason for this export (it goes in the person's ledger)."
            else:
                ledger_record(
                    subject_id=person.pk,
                    actor=request.user,
                    action=Action.EXPORT,
                    scope="all data (staff export)",
                    reason=reason,
                )
                return export_response(user=person)
        elif request.POST.get("action") == "erase":
            if request.POST.get("confirm", "").strip() != person.get_username():
                error = "Type the person's username to confirm the erasure."
            else:
                report = person_erase(user=person)
                messages.success(request, f"The person was erased: {dict(report.counts)}.")
                return redirect("admin:index")
    counts = {
        name: records_collection(name).count_documents({"user": person.pk})
        for name in sorted(set(CATEGORY_COLLECTIONS.values()))
    }
    context = {
        **admin.site.each_context(request),
        "title": f"Privacy: {person.get_username()}",
        "person": person,
        "connections": UserDataSource.objects.filter(user=person).order_by("provider"),
        "counts": counts,
        "ledger": ledger_of(user=person),
        "error": error,
    }
    return render(request, "admin/ingestion/person_privacy.html", context)
