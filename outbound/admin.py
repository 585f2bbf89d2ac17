"""Admin for change notifications: subscribers (added by staff, the secret shown once) and
deliveries (filtered by state, replayed under their own permission)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.cache import add_never_cache_headers

from outbound.delivery import (
    deliveries_replay,
    subscriber_pause,
    subscriber_resume,
    subscriber_secret_rotate,
)
from outbound.emit import workers_kick
from outbound.http import url_problem
from outbound.models import EVENT_TYPES, Delivery, Subscriber
from outbound.signing import secret_generate

CATEGORY_CHOICES = (
    ("external", "External"),
    ("behavioral", "Behavioral"),
    ("volunteered", "Volunteered"),
)


def _permitted(request: HttpRequest, opts: Any, action: str) -> bool:
    return request.user.has_perm(f"{opts.app_label}.{get_permission_codename(action, opts)}")


class SubscriberForm(forms.ModelForm):
    url = forms.URLField(
        max_length=2000, assume_scheme="https", help_text="Where events are POSTed (https)."
    )
    event_types = forms.MultipleChoiceField(
        choices=[(name, name) for name in EVENT_TYPES],
        widget=forms.CheckboxSelectMultiple,
        help_text="The events this subscriber receives.",
    )
    categories = forms.MultipleChoiceField(
        choices=CATEGORY_CHOICES,
        widget=forms.CheckboxSelectMultiple,
        help_text=(
            "Record categories whose events it receives (records.changed and connection "
            "events concern one; person.erased goes to every subscriber that wants it)."
        ),
    )

    class Meta:
        model = Subscriber
        fields = ("name", "url", "event_types", "categories")

    def clean_url(self) -> str:
        url = self.cleaned_data["url"]
        problem = url_problem(url)
        if problem:
            raise forms.ValidationError(problem)
        return url


@admin.register(Subscriber)
class SubscriberAdmin(admin.ModelAdmin):
    form = SubscriberForm
    list_display = (
        "name",
        "url",
        "active",
        "paused_reason",
        "failing_since",
        "last_success_at",
        "created_at",
    )
    list_filter = ("active",)
    search_fields = ("name", "url")
    readonly_fields = (
        "active",
        "paused_reason",
        "paused_at",
        "failing_since",
        "last_success_at",
        "created_by",
        "created_at",
    )
    actions = ("pause", "resume", "rotate_secret")

    def get_fields(self, request: HttpRequest, obj: Subscriber | None = None) -> Any:
        fields = ["name", "url", "event_types", "categories"]
        return fields if obj is None else [*fields, *self.readonly_fields]

    def get_readonly_fields(self, request: HttpRequest, obj: Subscriber | None = None) -> Any:
        return () if obj is None else self.readonly_fields

    def save_model(
        self, request: HttpRequest, obj: Subscriber, form: forms.Form, change: bool
    ) -> None:
        if not change:
            obj.created_by = request.user
            # Kept only on this request, to be shown once; stored encrypted.
            request._subscriber_secret = obj.secret = secret_generate()  # type: ignore[attr-defined]
        super().save_model(request, obj, form, change)

    def response_add(
        self, request: HttpRequest, obj: Subscriber, post_url_continue: str | None = None
    ) -> HttpResponse:
        secret = getattr(request, "_subscriber_secret", None)
        if secret is None:
            return super().response_add(request, obj, post_url_continue)
        return self._secret_once(request, obj, secret, rotated=False)

    def _secret_once(
        self, request: HttpRequest, obj: Subscriber, secret: str, *, rotated: bool
    ) -> HttpResponse:
        response = TemplateResponse(
            request,
            "admin/outbound/subscriber/secret_once.html",
            {
                **self.admin_site.each_context(request),
                "title": "New secret" if rotated else "Subscriber added",
                "subscriber": obj,
                "secret": secret,
                "rotated": rotated,
                "changelist_url": reverse("admin:outbound_subscriber_changelist"),
                "opts": self.model._meta,
            },
        )
        add_never_cache_headers(response)
        return response

    @admin.action(description="Rotate the signing secret (one subscriber)", permissions=["change"])
    def rotate_secret(
        self, request: HttpRequest, queryset: QuerySet[Subscriber]
    ) -> HttpResponse | None:
        if len(queryset) != 1:
            self.message_user(request, "Rotate one subscriber's secret at a time.", messages.ERROR)
            return None
        subscriber = queryset[0]
        return self._secret_once(
            request, subscriber, subscriber_secret_rotate(subscriber), rotated=True
        )

    def has_pause_permission(self, request: HttpRequest) -> bool:
        return _permitted(request, self.model._meta, "pause")

    @admin.action(description="Pause (stop sending; deliveries wait)", permissions=["pause"])
    def pause(self, request: HttpRequest, queryset: QuerySet[Subscriber]) -> None:
        for subscriber in queryset:
            subscriber_pause(subscriber, reason=f"Paused by {request.user.get_username()}.")
        self.message_user(request, f"{len(queryset)} subscribers paused.")

    @admin.action(description="Resume (send what waited, in order)", permissions=["pause"])
    def resume(self, request: HttpRequest, queryset: QuerySet[Subscriber]) -> None:
        waiting = sum(subscriber_resume(subscriber) for subscriber in queryset)
        workers_kick()
        self.message_user(
            request, f"{len(queryset)} subscribers resumed; {waiting} deliveries go now."
        )


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = (
        "created_at",
        "event_type",
        "event_id",
        "target_name",
        "state",
        "attempts",
        "last_result",
        "next_attempt_at",
        "delivered_at",
    )
    list_filter = ("state", "event_type")
    search_fields = ("event_id", "person")
    list_select_related = ("subscriber",)
    ordering = ("-created_at",)
    actions = ("replay",)
    readonly_fields = [field.name for field in Delivery._meta.fields if field.name not in ("id",)]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.display(description="to")
    def target_name(self, obj: Delivery) -> str:
        if obj.subscriber_id is not None:
            return str(obj.subscriber) if obj.subscriber else obj.target
        return f"handler {obj.handler}"

    @admin.display(description="last result")
    def last_result(self, obj: Delivery) -> str:
        if obj.last_error:
            return obj.last_error
        return f"HTTP {obj.last_status}" if obj.last_status else ""

    def has_replay_permission(self, request: HttpRequest) -> bool:
        return _permitted(request, self.model._meta, "replay")

    @admin.action(description="Replay (send again, same event id)", permissions=["replay"])
    def replay(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        replayed = deliveries_replay(queryset)
        workers_kick()
        skipped = len(queryset) - replayed
        self.message_user(
            request,
            f"{replayed} deliveries queued again"
            + (f"; {skipped} being sent right now were left alone." if skipped else "."),
            messages.SUCCESS if replayed else messages.WARNING,
        )
