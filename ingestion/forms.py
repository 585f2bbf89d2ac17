from datetime import timedelta
from typing import Any

from django import forms
from django.contrib.auth.base_user import AbstractBaseUser
from django.utils import timezone

from ingestion.processing import utc_offset_min


class ApiTokenForm(forms.Form):
    name = forms.CharField(
        label="Name",
        max_length=100,
        strip=True,
        help_text="Where the token is used, e.g. “Sibling for iPhone”.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "aria-describedby": "id_name_help"}),
    )


class EraseForm(forms.Form):
    """Delete all my data: the phrase, and the person's own password.

    The password makes a session left open (or stolen) not enough to erase an account.
    """

    PHRASE = "delete my data"
    REFUSED = "That is not your password. Nothing was deleted."
    CANNOT_CONFIRM = (
        "Your account has no password, so this cannot be confirmed here. Nothing was deleted."
    )
    confirm = forms.CharField(
        label=f'To confirm, type "{PHRASE}"',
        max_length=50,
        widget=forms.TextInput(attrs={"autocomplete": "off"}),
    )
    password = forms.CharField(
        label="Your password",
        strip=False,
        max_length=4096,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
    )

    def __init__(self, *args: Any, user: AbstractBaseUser, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user = user
        # Set when the password was checked and was wrong (the view counts those).
        self.password_refused = False

    def clean_confirm(self) -> str:
        value = self.cleaned_data["confirm"].strip().lower()
        if value != self.PHRASE:
            raise forms.ValidationError(f'Type "{self.PHRASE}" to confirm.')
        return value

    def clean_password(self) -> str:
        password = self.cleaned_data["password"]
        if not self.user.has_usable_password():
            raise forms.ValidationError(self.CANNOT_CONFIRM)
        if not self.user.check_password(password):
            self.password_refused = True
            raise forms.ValidationError(self.REFUSED)
        return password


class MoodRatingForm(forms.Form):
    """A mood rating volunteered on the My data page (kind ``mood_rating``)."""

    kind = "mood_rating"
    rating = forms.TypedChoiceField(
        label="How do you feel?",
        choices=[(n, f"{n}") for n in range(1, 6)],
        coerce=int,
        widget=forms.RadioSelect,
        help_text="1 is very low, 5 is very good.",
    )
    note = forms.CharField(
        label="Note (optional)",
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2}),
    )

    def event_data(self) -> dict:
        data: dict = {"rating": self.cleaned_data["rating"]}
        if self.cleaned_data["note"]:
            data["note"] = self.cleaned_data["note"]
        return data


class NoteForm(forms.Form):
    """A free-text note volunteered on the My data page (kind ``note``)."""

    kind = "note"
    text = forms.CharField(
        label="Note",
        max_length=10000,
        widget=forms.Textarea(attrs={"rows": 3}),
    )

    def event_data(self) -> dict:
        return {"text": self.cleaned_data["text"]}


class SleepLogForm(forms.Form):
    """A night's sleep logged by hand on the My data page (kind ``sleep_log``).

    The times are the person's local times: Django reads a date and time without an offset in
    the current time zone, which ``sibling.middleware.PersonTimeZoneMiddleware`` sets to the
    person's. A local time that does not exist or happens twice (the hour a clock moves forward
    or back) is refused with a message naming the zone. The record keeps the instants in UTC
    and the offset they were entered at (``utc_offset_min``).
    """

    kind = "sleep_log"
    start = forms.DateTimeField(
        label="Went to sleep",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )
    end = forms.DateTimeField(
        label="Woke up",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )
    quality = forms.TypedChoiceField(
        label="Sleep quality (optional)",
        choices=[("", "Not rated"), *[(n, f"{n}") for n in range(1, 6)]],
        coerce=int,
        empty_value=None,
        required=False,
        help_text="1 is very poor, 5 is very good.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        zone = timezone.get_current_timezone_name()
        for name in ("start", "end"):
            self.fields[name].help_text = f"Date and time in your time zone ({zone})."

    def clean(self) -> dict:
        cleaned = super().clean()
        start, end = cleaned.get("start"), cleaned.get("end")
        if start and end:
            if end <= start:
                self.add_error("end", "The wake-up time must be after the time you went to sleep.")
            elif end - start > SLEEP_LOG_MAX:
                self.add_error("end", "A sleep log covers at most 24 hours.")
            elif end > timezone.now() + CLOCK_SKEW:
                self.add_error("end", "The wake-up time cannot be in the future.")
        return cleaned

    def event_data(self) -> dict:
        start = self.cleaned_data["start"]
        data: dict = {"start": start, "end": self.cleaned_data["end"]}
        offset = utc_offset_min(start.utcoffset())
        if offset is not None:
            data["utc_offset_min"] = offset
        if self.cleaned_data["quality"] is not None:
            data["quality"] = self.cleaned_data["quality"]
        return data


SLEEP_LOG_MAX = timedelta(hours=24)
# A phone's clock a little ahead of the server's is not a sleep log from the future.
CLOCK_SKEW = timedelta(minutes=5)
VOLUNTEERED_FORMS: dict[str, type[forms.Form]] = {
    form.kind: form for form in (MoodRatingForm, NoteForm, SleepLogForm)
}
