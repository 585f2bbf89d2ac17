from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import UserCreationForm

from sibling.people import DEFAULT_TIME_ZONE, person_of, time_zone_valid
from sources.models import UserDataSource
from sources.providers.base import BACKFILL_CHOICES_DAYS, BACKFILL_EVERYTHING, Provider


class SignUpForm(UserCreationForm):
    email = forms.EmailField(required=True, help_text="We write to you only about your account.")
    # Filled by the browser (sibling/static/sibling/time_zone.js) with its IANA time zone; the
    # person changes it later on the settings page.
    time_zone = forms.CharField(
        required=False,
        max_length=64,
        widget=forms.HiddenInput(attrs={"data-browser-time-zone": ""}),
    )

    class Meta(UserCreationForm.Meta):
        model = get_user_model()
        fields = ("username", "email")

    def clean_time_zone(self) -> str:
        # A browser without the Intl API sends nothing, and one may name a zone this machine's
        # tz database does not have yet: neither stops a sign-up (the field is hidden, so the
        # person could not correct it); UTC stands in until they choose in settings.
        name = self.cleaned_data.get("time_zone") or ""
        return name if time_zone_valid(name) else DEFAULT_TIME_ZONE

    def save(self, commit: bool = True) -> Any:
        user = super().save(commit=commit)
        if commit:
            person = person_of(user)
            person.time_zone = self.cleaned_data["time_zone"]
            person.save(update_fields=["time_zone"])
        return user

    def clean_email(self) -> str:
        email = self.cleaned_data["email"].lower()
        if get_user_model().objects.filter(email__iexact=email).exists():
            raise forms.ValidationError("An account with this email exists already.")
        return email


class ApiKeyForm(forms.Form):
    api_key = forms.CharField(
        label="API key",
        max_length=200,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
    )


class DisconnectForm(forms.Form):
    KEEP, DELETE = "keep", "delete"
    data = forms.ChoiceField(
        label="What should happen to the data already fetched from this source?",
        choices=[
            (KEEP, "Keep it in Sibling"),
            (DELETE, "Delete it from Sibling"),
        ],
        widget=forms.RadioSelect,
        initial=KEEP,
    )


# --- A connection's schedule and history window (the Connections page, the connect steps) ---


def interval_label(seconds: int) -> str:
    """How often, in words: "Every 15 minutes", "Every hour", "Every 6 hours", "Once a day"."""
    if seconds % 86400 == 0:
        days = seconds // 86400
        return "Once a day" if days == 1 else f"Every {days} days"
    if seconds % 3600 == 0:
        hours = seconds // 3600
        return "Every hour" if hours == 1 else f"Every {hours} hours"
    if seconds % 60 == 0:
        minutes = seconds // 60
        return "Every minute" if minutes == 1 else f"Every {minutes} minutes"
    return f"Every {seconds} seconds"


def backfill_label(provider: type[Provider], days: int) -> str:
    """A history window in words; the provider's maximum says it is the most it allows."""
    if days == BACKFILL_EVERYTHING:
        return f"Everything {provider.name} has"
    text = {365: "1 year", 730: "2 years"}.get(days, f"{days} days")
    if days == provider.max_backfill_days and days not in BACKFILL_CHOICES_DAYS:
        return f"{text} (the most available)"
    return text


class SyncIntervalForm(forms.Form):
    """How often one connection syncs: its provider's choices (and the interval it has, which
    staff may have set to another value in admin)."""

    sync_interval = forms.TypedChoiceField(label="Syncs", coerce=int)

    def __init__(self, *args: Any, connection: UserDataSource, **kwargs: Any) -> None:
        kwargs.setdefault("auto_id", f"id_%s_{connection.pk}")
        kwargs.setdefault("initial", {"sync_interval": connection.sync_interval})
        super().__init__(*args, **kwargs)
        choices = list(connection.provider_class.sync_interval_choices)
        if connection.sync_interval not in choices:
            choices = sorted([*choices, connection.sync_interval])
        self.fields["sync_interval"].choices = [(s, interval_label(s)) for s in choices]


class BackfillForm(forms.Form):
    """How far back a first sync reaches: the provider's ``backfill_choices``. Left out, it is
    None: the default window."""

    backfill_days = forms.TypedChoiceField(
        label="History to fetch", coerce=int, required=False, empty_value=None
    )

    def __init__(
        self, *args: Any, provider: type[Provider], days: int | None = None, **kwargs: Any
    ) -> None:
        kwargs.setdefault("auto_id", f"id_%s_{provider.id}")
        days = provider.backfill_days_default() if days is None else days
        kwargs.setdefault("initial", {"backfill_days": days})
        super().__init__(*args, **kwargs)
        choices = list(provider.backfill_choices())
        if (default := provider.backfill_days_default()) not in choices:
            choices.append(default)
        # "Everything" (0) sorts last, after the longest window.
        choices.sort(key=lambda d: d or 10**9)
        self.fields["backfill_days"].choices = [(d, backfill_label(provider, d)) for d in choices]
