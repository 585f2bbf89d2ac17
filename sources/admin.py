from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from ingestion.admin import ReadOnlyAdmin, SyncRunInline, action_permitted
from sources import services
from sources.models import PendingRevocation, UserDataSource
from sources.providers import PROVIDERS
from sources.revocations import revocation_retry_now

BADGE_COLOURS = {
    "active": ("#e7f5ee", "#1f7a4d"),
    "paused": ("#fff4db", "#8a5a00"),
    "reauth_required": ("#fbeaea", "#a3262d"),
    "error": ("#fbeaea", "#a3262d"),
    "disconnected": ("#eceff4", "#444"),
}


class ProviderListFilter(admin.SimpleListFilter):
    """Filter by provider, named as the registry names them (the field has no choices)."""

    title = "provider"
    parameter_name = "provider__exact"  # the URLs of the former field filter keep working

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(provider.id, provider.name) for provider in PROVIDERS.values()]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        return queryset.filter(provider=value) if value else queryset


@admin.register(UserDataSource)
class UserDataSourceAdmin(admin.ModelAdmin):
    list_display = (
        "person",
        "provider",
        "status_badge",
        "sandbox",
        "last_success_at",
        "next_sync_at",
        "consecutive_failures",
        "records_stored",
        "last_error",
    )
    list_filter = (ProviderListFilter, "status", "sandbox")
    # Pattern lookups work on string fields only; the person's email is one.
    search_fields = ("user__email",)
    list_select_related = ("user",)
    ordering = ("-updated_at",)
    inlines = (SyncRunInline,)
    actions = ("sync_now", "pause", "resume", "full_resync", "disconnect_keep_data")
    # Credentials and the account label are never shown; the detail page says they are stored.
    exclude = ("credentials", "account_label")
    # What staff with the change permission may edit by hand; everything else (the status, the
    # leases, the lookup hash, fields added later) changes only through the actions and the
    # services behind them, which keep a connection's state consistent.
    editable_fields = ("sync_interval", "next_sync_at", "notice")
    readonly_fields = (
        "user",
        "provider",
        "external_account_id",
        "credentials_state",
        "sandbox",
        "granted_scopes",
        "cursors",
        "last_success_at",
        "last_error",
        "consecutive_failures",
        "records_stored",
        "backfill_progress",
        "disconnected_at",
        "created_at",
        "updated_at",
    )

    @admin.display(description="person", ordering="user__email")
    def person(self, obj: UserDataSource) -> str:
        return obj.user.email or obj.user.get_username()

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: UserDataSource) -> str:
        background, colour = BADGE_COLOURS.get(obj.status, ("#eceff4", "#444"))
        return format_html(
            '<span style="background:{};color:{};padding:1px 8px;border-radius:9px">{}</span>',
            background,
            colour,
            obj.get_status_display(),
        )

    @admin.display(description="credentials")
    def credentials_state(self, obj: UserDataSource) -> str:
        if not obj.credentials:
            return "none"
        # The provider declares which keys are secrets; only the others are shown.
        shown = obj.provider_class.credentials_redacted(obj.credentials)
        return "stored, encrypted: " + ", ".join(f"{k}={v}" for k, v in sorted(shown.items()))

    def get_readonly_fields(self, request: HttpRequest, obj: object = None) -> tuple:
        shown = tuple(self.readonly_fields)
        hidden = {"id", *self.exclude, *self.editable_fields, *shown}
        rest = tuple(f.name for f in self.model._meta.concrete_fields if f.name not in hidden)
        return (*shown, *rest)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # connections are made by people through the connect flows

    def save_model(
        self, request: HttpRequest, obj: UserDataSource, form: Any, change: bool
    ) -> None:
        # Only the fields staff changed: a full save would write back the lease, cursors and
        # queued windows as the form read them, over what a running sync stored since.
        obj.save(update_fields=[*form.changed_data, "updated_at"])

    def has_sync_permission(self, request: HttpRequest) -> bool:
        return action_permitted(request, self.model._meta, "sync")

    def has_disconnect_permission(self, request: HttpRequest) -> bool:
        return action_permitted(request, self.model._meta, "disconnect")

    def _apply(self, request: HttpRequest, queryset: QuerySet, service: object, done: str) -> None:
        changed = sum(1 for connection in queryset if service(connection=connection))
        self.message_user(request, f"{done}: {changed} of {queryset.count()}.", messages.SUCCESS)

    @admin.action(description="Sync now", permissions=["sync"])
    def sync_now(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._apply(request, queryset, services.connection_sync_now, "Due now")

    @admin.action(description="Pause", permissions=["sync"])
    def pause(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._apply(request, queryset, services.connection_pause, "Paused")

    @admin.action(description="Resume", permissions=["sync"])
    def resume(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._apply(request, queryset, services.connection_resume, "Resumed")

    @admin.action(description="Full resync (forget cursors)", permissions=["sync"])
    def full_resync(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._apply(request, queryset, services.connection_full_resync, "Resync scheduled")

    @admin.action(description="Disconnect (revoke access, keep data)", permissions=["disconnect"])
    def disconnect_keep_data(self, request: HttpRequest, queryset: QuerySet) -> None:
        disconnected = unconfirmed = 0
        for connection in queryset.exclude(status=UserDataSource.Status.DISCONNECTED):
            result = services.connection_disconnect(connection=connection, delete_data=False)
            disconnected += 1
            unconfirmed += not result.revoked
        self.message_user(request, f"Disconnected: {disconnected}.", messages.SUCCESS)
        if unconfirmed:
            self.message_user(
                request,
                f"{unconfirmed} of them: the provider has not confirmed that access was withdrawn "
                "yet; Pending revocations lists them while Sibling asks again.",
                messages.WARNING,
            )


@admin.register(PendingRevocation)
class PendingRevocationAdmin(ReadOnlyAdmin):
    """Grants people let go of that the provider has not confirmed withdrawn yet.

    Read-only for everyone (rows change only through the retry task); the token is never shown.
    "Retry now" needs the change permission.
    """

    list_display = (
        "person",
        "provider",
        "state",
        "attempts",
        "next_attempt_at",
        "last_attempt_at",
        "last_error",
        "created_at",
    )
    list_filter = (ProviderListFilter, "state")
    search_fields = ("user__email",)
    list_select_related = ("user",)
    ordering = ("-created_at",)
    exclude = ("token",)
    readonly_fields = (
        "user",
        "connection",
        "provider",
        "token_type_hint",
        "state",
        "attempts",
        "next_attempt_at",
        "last_attempt_at",
        "last_error",
        "created_at",
    )
    actions = ("retry_now",)

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        # The token is never read for a staff page.
        return super().get_queryset(request).defer("token")

    @admin.display(description="person", ordering="user__email")
    def person(self, obj: PendingRevocation) -> str:
        return obj.user.email or obj.user.get_username()

    def has_retry_permission(self, request: HttpRequest) -> bool:
        # The model's change permission (ReadOnlyAdmin refuses changing rows by hand).
        return action_permitted(request, self.model._meta, "change")

    @admin.action(description="Retry now", permissions=["retry"])
    def retry_now(self, request: HttpRequest, queryset: QuerySet) -> None:
        rows = list(queryset)
        confirmed = sum(revocation_retry_now(pending=pending) for pending in rows)
        self.message_user(
            request,
            f"Confirmed by the provider: {confirmed} of {len(rows)}.",
            messages.SUCCESS if confirmed else messages.WARNING,
        )
