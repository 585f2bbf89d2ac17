from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import UserCreationForm


class SignUpForm(UserCreationForm):
    email = forms.EmailField(required=True, help_text="We write to you only about your account.")

    class Meta(UserCreationForm.Meta):
        model = get_user_model()
        fields = ("username", "email")

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
