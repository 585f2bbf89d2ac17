"""The social-auth pipeline's generic parts, for any OAuth2 provider."""

import pytest

from sources.pipeline import ACCOUNT_LABEL_MAX_LENGTH, account_label_from
from sources.providers import providers_with

PROVIDER = providers_with("oauth2")[0]


@pytest.mark.parametrize(
    ("details", "label"),
    [
        ({"email": "ada@example.com", "username": "ada", "fullname": "Ada L"}, "ada@example.com"),
        ({"email": "", "username": "ada_runs", "first_name": "Ada"}, "ada_runs"),
        ({"email": None, "username": "", "fullname": " Ada Lovelace "}, "Ada Lovelace"),
        ({"first_name": "Ada", "last_name": "Lovelace"}, "Ada Lovelace"),
        ({"first_name": "Ada", "last_name": None}, "Ada"),
        ({"username": "  ", "email": ["not", "text"]}, f"{PROVIDER.name} account"),
        ({}, f"{PROVIDER.name} account"),
    ],
)
def test_an_account_is_labelled_by_email_else_username_else_name_else_the_provider(details, label):
    assert account_label_from(PROVIDER, details) == label


def test_a_label_is_cut_short():
    assert len(account_label_from(PROVIDER, {"username": "x" * 5000})) == ACCOUNT_LABEL_MAX_LENGTH


def test_a_standard_oauth2_backend_names_the_account_from_openid_connect_claims():
    from sources.providers.oauth2 import ProviderOAuth2

    backend = ProviderOAuth2()
    details = backend.get_user_details({"sub": "1", "id": "42", "name": "Ada Lovelace"})
    assert account_label_from(PROVIDER, details) == "Ada Lovelace"
    details = backend.get_user_details({"id": "42", "preferred_username": "ada"})
    assert account_label_from(PROVIDER, details) == "ada"
