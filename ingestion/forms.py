from django import forms


class ApiTokenForm(forms.Form):
    name = forms.CharField(
        label="Name",
        max_length=100,
        strip=True,
        help_text="Where the token is used, e.g. “Sibling for iPhone”.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "aria-describedby": "id_name_help"}),
    )
