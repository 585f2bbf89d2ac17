from django import forms


class ApiTokenForm(forms.Form):
    name = forms.CharField(
        label="Name",
        max_length=100,
        strip=True,
        help_text="Where the token is used, e.g. “Sibling for iPhone”.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "aria-describedby": "id_name_help"}),
    )


class EraseForm(forms.Form):
    PHRASE = "delete my data"
    confirm = forms.CharField(
        label=f'To confirm, type "{PHRASE}"',
        max_length=50,
        widget=forms.TextInput(attrs={"autocomplete": "off"}),
    )

    def clean_confirm(self) -> str:
        value = self.cleaned_data["confirm"].strip().lower()
        if value != self.PHRASE:
            raise forms.ValidationError(f'Type "{self.PHRASE}" to confirm.')
        return value
