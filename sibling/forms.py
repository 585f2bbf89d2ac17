"""A person's own settings: their time zone and whether Sibling emails them about connections."""

from __future__ import annotations

from django import forms

from sibling.models import Person
from sibling.people import DEFAULT_TIME_ZONE, time_zone_names

TIME_ZONE_UNKNOWN = "“%(value)s” is not a time zone Sibling knows. Choose one from the list."


def time_zone_choices() -> list[tuple[str, str]]:
    """UTC first, then every place by its IANA name ("Europe/Paris"), alphabetically."""
    names = sorted(time_zone_names() - {DEFAULT_TIME_ZONE})
    return [(DEFAULT_TIME_ZONE, DEFAULT_TIME_ZONE), *((name, name) for name in names)]


class PersonSettingsForm(forms.ModelForm):
    time_zone = forms.ChoiceField(
        label="Time zone",
        choices=time_zone_choices,
        error_messages={"invalid_choice": TIME_ZONE_UNKNOWN, "required": "Choose a time zone."},
        help_text="Pages, charts, the sleep form and exports show times in this zone.",
        widget=forms.Select(attrs={"aria-describedby": "id_time_zone_help"}),
    )
    alert_emails = forms.BooleanField(
        label="Email me when a connection needs me",
        required=False,
        help_text="When a source needs you to sign in again, stops syncing, or your bank will "
        "stop sharing soon: one email per incident.",
        widget=forms.CheckboxInput(attrs={"aria-describedby": "id_alert_emails_help"}),
    )

    class Meta:
        model = Person
        fields = ("time_zone", "alert_emails")
