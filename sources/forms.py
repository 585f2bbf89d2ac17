from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import UserCreationForm

from sibling.people import DEFAULT_TIME_ZONE, person_of, time_zone_valid


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
