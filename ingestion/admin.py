import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth import get_permission_codename, get_user_model
from django.contrib.auth.decorators import permission_required
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect, render
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.views.decorators.cache import never_cache

from ingestion import selectors
from ingestion.authentication import service_token_revoke, service_token_secret_set
from ingestion.budgets import budget_summary
from ingestion.erasure import person_erase
from ingestion.export import export_response
from ingestion.ledger import Action, ledger_of, ledger_record
from ingestion.models import (
    AccessLedgerEntry,
    QuarantinedItem,
    ServiceToken,
    SyncRun,
    WebhookEvent,
    WebhookRejection,
)
from ingestion.schemas import CATEGORY_COLLECTIONS
from ingestion.storage import records_collection
from ingestion.views import ERASE_TOO_MANY_WRONG_PASSWORDS
from ingestion.webhooks import webhook_event_enqueue
from sibling.lookups import object_or_404
from sibling.models import Person
from sibling.throttles import password_guess_usage
from sources.models import UserDataSource

# Who may do what in the views below (declared in the models' Meta.permissions).
DASHBOARD_PERMISSION = "sources.view_userdatasource"
PRIVACY_VIEW_PERMISSION = "ingestion.view_person_privacy"
PRIVACY_EXPORT_PERMISSION = "ingestion.export_person_data"
PRIVACY_ERASE_PERMISSION = "ingestion.erase_person"
PAYLOAD_PERMISSION = "ingestion.view_webhook_payload"

ERASE_STAFF_REFUSED = "Only a superuser may erase a staff or superuser account."
ERASE_SELF_REFUSED = "Your own account is erased from your own data page, not from here."
ERASE_CONFIRM_WRONG = "Type the person's username to confirm the erasure."
ERASE_REAUTH_FAILED = "Your own password is needed to confirm an erasure; it was not right."
PAYLOAD_REASON_MISSING = "Give the reason for seeing this payload (it goes in the person's ledger)."


def staff_view(permission: str) -> Callable[[Callable], Callable]:
    """Admin pages outside ModelAdmin: people who are not staff are sent to the admin login;
    staff without ``permission`` get 403. Never cached: the pages show personal data."""

    def decorate(view: Callable) -> Callable:
        checked = permission_required(permission, raise_exception=True)(view)
        return staff_member_required(never_cache(checked))

    return decorate


def action_permitted(request: HttpRequest, opts: Any, action: str) -> bool:
    """The model permission an admin action declares, named like Django's own
    (``<app>.<action>_<model>``)."""
    return request.user.has_perm(f"{opts.app_label}.{get_permission_codename(action, opts)}")


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows only the system writes: staff with the view permission read them, nobody adds or
    edits one here, and rows that are evidence (``deletable = False``) are not deleted either."""

    deletable = True

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return self.deletable and super().has_delete_permission(request, obj)


@admin.register(SyncRun)
class SyncRunAdmin(ReadOnlyAdmin):
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


@staff_view(DASHBOARD_PERMISSION)
def dashboard(request: HttpRequest) -> HttpResponse:
    """Sync health: for staff who may see connections (the page is about them)."""
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
        "budgets": budget_summary(),
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
    def payload_hidden(self, obj: WebhookEvent) -> str:
        return "encrypted; shown on its own page to staff allowed to see webhook payloads"

    def get_urls(self) -> list[URLPattern]:
        opts = self.model._meta
        reveal = path(
            "<path:object_id>/payload/",
            self.admin_site.admin_view(self.payload_view),
            name=f"{opts.app_label}_{opts.model_name}_payload",
        )
        return [reveal, *super().get_urls()]

    def payload_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The decrypted payload, for a reason given by POST (CSRF-checked, never in a URL,
        so it stays out of logs and history); every showing goes in the person's ledger."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        event = self.get_object(request, unquote(object_id))
        if event is None:
            raise Http404("No such event")
        if not (
            self.has_view_permission(request, event) and request.user.has_perm(PAYLOAD_PERMISSION)
        ):
            raise PermissionDenied
        reason = request.POST.get("reason", "").strip()
        if not reason:
            messages.error(request, PAYLOAD_REASON_MISSING)
            opts = self.model._meta
            return redirect(
                reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[quote(event.pk)])
            )
        ledger_record(
            subject_id=event.user_id,
            actor=request.user,
            action=Action.VIEW,
            scope=f"webhook event {event.pk} payload",
            reason=reason,
        )
        payload = None
        if event.payload is not None:
            payload = json.dumps(event.payload, indent=2, default=str)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Payload of {event}",
            "opts": self.model._meta,
            "original": event,
            "payload": payload,
            "reason": reason,
        }
        return render(request, "admin/ingestion/webhookevent/payload.html", context)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        allowed = request.user.has_perm(PAYLOAD_PERMISSION)
        context = {**(extra_context or {}), "can_reveal": allowed}
        return super().change_view(request, object_id, form_url, extra_context=context)

    def get_readonly_fields(self, request: HttpRequest, obj: object = None) -> tuple:
        return (*self.readonly_fields, "payload_hidden")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        # Nothing on an event is edited by hand (a saved form would also overwrite the worker's
        # concurrent status updates); staff act on events through Replay.
        return False

    def has_replay_permission(self, request: HttpRequest) -> bool:
        return action_permitted(request, self.model._meta, "replay")

    @admin.action(description="Replay (process again)", permissions=["replay"])
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
class AccessLedgerEntryAdmin(ReadOnlyAdmin):
    deletable = False
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
        # Service reads: the token, the hour counted, records read per category, last read.
        "service",
        "bucket",
        "counts",
        "last_at",
    )


@staff_view(PRIVACY_VIEW_PERMISSION)
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


@dataclass(frozen=True)
class PrivacyRights:
    """What one staff member may do on one person's privacy page."""

    export: bool
    erase: bool
    # Why the erasure is not offered although the staff member holds the permission.
    erase_refused: str = ""


def privacy_rights(*, actor: AbstractBaseUser, person: AbstractBaseUser) -> PrivacyRights:
    export = actor.has_perm(PRIVACY_EXPORT_PERMISSION)
    if not actor.has_perm(PRIVACY_ERASE_PERMISSION):
        return PrivacyRights(export=export, erase=False)
    if person.pk == actor.pk:
        return PrivacyRights(export=export, erase=False, erase_refused=ERASE_SELF_REFUSED)
    # A staff account erased by another staff member would be a way around the superusers.
    if (person.is_staff or person.is_superuser) and not actor.is_superuser:
        return PrivacyRights(export=export, erase=False, erase_refused=ERASE_STAFF_REFUSED)
    return PrivacyRights(export=export, erase=True)


@staff_view(PRIVACY_VIEW_PERMISSION)
def person_privacy(request: HttpRequest, user_id: str) -> HttpResponse:
    """A person's privacy view: connections, record counts, ledger; export and erasure.

    Seeing the page needs ``view_person_privacy``; exporting adds ``export_person_data``,
    erasing ``erase_person`` and the acting staff member's own password (staff and superuser
    accounts only by a superuser). Anything else is 403.
    """
    person = object_or_404(get_user_model().objects.all(), user_id, what="person")
    rights = privacy_rights(actor=request.user, person=person)
    error = ""
    retry_after = 0  # seconds, once the staff member's wrong passwords are too many
    if request.method == "POST":
        reason = request.POST.get("reason", "").strip()
        action = request.POST.get("action")
        if action not in ("export", "erase"):
            error = "Choose export or erasure."
        elif not getattr(rights, action):
            raise PermissionDenied
        elif action == "export":
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
        elif (usage := password_guess_usage(request, increment=False)) and (
            usage["count"] >= usage["limit"]
        ):
            error = ERASE_TOO_MANY_WRONG_PASSWORDS
            retry_after = max(1, int(usage["time_left"]))
        elif request.POST.get("confirm", "").strip() != person.get_username():
            error = ERASE_CONFIRM_WRONG
        elif not request.user.check_password(request.POST.get("password", "")):
            # Counted with the staff member's own login guesses, as on a person's own erasure
            # form: else this form would be a way around the login's limit for someone who
            # holds a staff session.
            password_guess_usage(request, increment=True)
            error = ERASE_REAUTH_FAILED
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
        "rights": rights,
    }
    status = 429 if retry_after else 200
    response = render(request, "admin/ingestion/person_privacy.html", context, status=status)
    if retry_after:
        response["Retry-After"] = str(retry_after)
    return response


@admin.register(WebhookRejection)
class WebhookRejectionAdmin(ReadOnlyAdmin):
    """Refused webhook deliveries, counted per provider, reason, sender and hour (read-only;
    the rows expire on their own). Forged traffic is never stored as events."""

    deletable = False

    list_display = ("bucket", "provider", "reason", "sender", "count", "last_at")
    list_filter = ("provider", "reason")
    date_hierarchy = "bucket"
    fields = ("provider", "reason", "sender", "bucket", "count", "first_at", "last_at")
    readonly_fields = (*fields, "examples_view")

    @admin.display(description="recent examples (no bodies)")
    def examples_view(self, obj: WebhookRejection) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.examples, indent=2))

    def get_fields(self, request: HttpRequest, obj: object = None) -> tuple:
        return (*self.fields, "examples_view")


class ServiceTokenForm(forms.ModelForm):
    """A new service token: its name, scopes and optional person (by public id)."""

    scopes = forms.MultipleChoiceField(
        choices=ServiceToken.Scope.choices,
        widget=forms.CheckboxSelectMultiple,
        help_text="The categories of records it may read.",
    )
    person_public_id = forms.CharField(
        label="Only this person (public id)",
        required=False,
        max_length=36,
        help_text="Leave empty for a module that reads any person a request names.",
    )

    class Meta:
        model = ServiceToken
        fields = ("name", "scopes")

    def clean_person_public_id(self) -> Person | None:
        public_id = self.cleaned_data["person_public_id"].strip()
        if not public_id:
            return None
        person = Person.objects.filter(public_id=public_id).first()
        if person is None:
            raise forms.ValidationError("No person has this public id.")
        return person


@admin.register(ServiceToken)
class ServiceTokenAdmin(admin.ModelAdmin):
    """Service tokens for Sibling's other modules. Making one needs ``add_servicetoken`` and
    shows its secret once, on the answer to the form; revoking needs ``revoke_servicetoken``.
    A token is never edited (its scopes are what people's ledgers were told) nor deleted (the
    ledger's entries name it): a changed need is a new token, and the old one is revoked."""

    form = ServiceTokenForm
    list_display = (
        "name",
        "prefix",
        "scope_list",
        "person_public_id",
        "created_by",
        "created_at",
        "last_used_at",
        "revoked_at",
    )
    list_select_related = ("person", "created_by")
    list_filter = ("revoked_at",)
    readonly_fields = list_display  # a token is only ever shown, all of it, as in the list
    actions = ("revoke",)

    @admin.display(description="scopes")
    def scope_list(self, obj: ServiceToken) -> str:
        return ", ".join(obj.scopes or ())

    @admin.display(description="only person")
    def person_public_id(self, obj: ServiceToken) -> str:
        return obj.person.public_id if obj.person_id else "any (named per request)"

    def get_fields(self, request: HttpRequest, obj: object = None) -> tuple:
        if obj is None:
            return ("name", "scopes", "person_public_id")
        return self.readonly_fields

    def get_readonly_fields(self, request: HttpRequest, obj: object = None) -> tuple:
        return () if obj is None else self.readonly_fields

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any):  # noqa: ANN201
        if obj is not None:  # an existing token is only shown
            kwargs["form"] = forms.ModelForm
        return super().get_form(request, obj, change=change, **kwargs)

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return action_permitted(request, self.model._meta, "revoke")

    def save_model(self, request: HttpRequest, obj: ServiceToken, form: Any, change: bool) -> None:
        if change:  # pragma: no cover - tokens are never edited (no change permission)
            raise PermissionDenied
        obj.scopes = sorted(set(form.cleaned_data["scopes"]))
        obj.person = form.cleaned_data.get("person_public_id")
        obj.created_by = request.user
        # Shown on this answer only (response_add); never stored, logged or shown again.
        request._service_token_secret = service_token_secret_set(obj)
        obj.save()

    def response_add(
        self, request: HttpRequest, obj: ServiceToken, post_url_continue: Any = None
    ) -> HttpResponse:
        secret = getattr(request, "_service_token_secret", None)
        if secret is None:  # pragma: no cover
            return super().response_add(request, obj, post_url_continue)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Service token “{obj.name}” made",
            "opts": self.model._meta,
            "token": obj,
            "secret": secret,
        }
        response = render(request, "admin/ingestion/servicetoken/created.html", context)
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Revoke (requests with it are refused)", permissions=["revoke"])
    def revoke(self, request: HttpRequest, queryset: QuerySet) -> None:
        revoked = 0
        for token in queryset.filter(revoked_at__isnull=True):
            service_token_revoke(token=token)
            revoked += 1
        self.message_user(request, f"{revoked} service tokens revoked.")
