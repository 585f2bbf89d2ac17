from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from alerts.models import Incident


@admin.register(Incident)
class IncidentAdmin(admin.ModelAdmin):
    """What was emailed to whom is read-only: incidents are opened and closed by the
    connection's own changes, never by hand. No address is shown, only whose it was."""

    list_display = ("kind", "provider", "user", "opened_at", "closed_at", "email_state")
    list_filter = ("kind", "email_state", "closed_by")
    fields = (
        "user",
        "connection",
        "provider",
        "kind",
        "opened_at",
        "closed_at",
        "closed_by",
        "email_state",
        "email_note",
        "email_attempts",
        "emailed_at",
    )
    readonly_fields = fields
    ordering = ("-opened_at",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
