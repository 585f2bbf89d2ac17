"""Delete all my data asks for the person's own password: a session alone (left open on a shared
computer, or stolen) cannot erase an account, and the form is no way around the login's limit on
password guesses."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from ingestion.authentication import api_token_create, api_tokens_of
from ingestion.forms import EraseForm
from ingestion.models import ErasureRecord
from ingestion.views import ERASE_TOO_MANY_WRONG_PASSWORDS
from tests.factories import UserFactory
from tests.sources.conftest import PASSWORD

URL = reverse("ingestion:privacy")
PHRASE = "delete my data"


@pytest.fixture
def signed_in_person(client, db):
    person = UserFactory()
    api_token_create(user=person, name="phone")  # something erasure would delete
    client.force_login(person, backend="django.contrib.auth.backends.ModelBackend")
    return person


def _nothing_erased(client, person) -> None:
    assert get_user_model().objects.filter(pk=person.pk).exists()
    assert len(api_tokens_of(user=person)) == 1
    assert not ErasureRecord.objects.exists()
    assert client.get(URL).status_code == 200  # still signed in


def test_the_form_asks_for_the_password(client, signed_in_person):
    html = client.get(URL).content.decode()
    assert 'type="password"' in html and 'autocomplete="current-password"' in html


def test_a_wrong_password_is_a_clear_error_and_erases_nothing(client, signed_in_person):
    # Someone at a session left open knows the phrase, not the password.
    page = client.post(URL, {"confirm": PHRASE, "password": "a guess"})
    assert page.status_code == 200
    assert EraseForm.REFUSED in page.content.decode()
    _nothing_erased(client, signed_in_person)


def test_no_password_erases_nothing(client, signed_in_person):
    page = client.post(URL, {"confirm": PHRASE})
    assert page.status_code == 200 and "This field is required." in page.content.decode()
    _nothing_erased(client, signed_in_person)


def test_an_account_without_a_usable_password_cannot_be_erased_here(client, db):
    person = UserFactory()
    person.set_unusable_password()
    person.save()
    client.force_login(person, backend="django.contrib.auth.backends.ModelBackend")
    page = client.post(URL, {"confirm": PHRASE, "password": "!"})
    assert EraseForm.CANNOT_CONFIRM in page.content.decode()
    assert get_user_model().objects.filter(pk=person.pk).exists()


def test_wrong_passwords_are_limited_like_the_login(client, signed_in_person, settings):
    settings.SIBLING_LOGIN_RATE_USERNAME = "2/h"
    for _ in range(2):
        assert client.post(URL, {"confirm": PHRASE, "password": "a guess"}).status_code == 200
    # The budget is spent: even the right password waits, so guessing gains nothing.
    limited = client.post(URL, {"confirm": PHRASE, "password": PASSWORD})
    assert limited.status_code == 429
    assert int(limited["Retry-After"]) > 0
    assert ERASE_TOO_MANY_WRONG_PASSWORDS in limited.content.decode()
    _nothing_erased(client, signed_in_person)


def test_the_form_and_the_login_share_one_budget_of_guesses(client, signed_in_person, settings):
    """A guess here and a guess at the login are counted together, per username: a session
    left open does not add guesses to what the login allows."""
    settings.SIBLING_LOGIN_RATE_USERNAME = "2/h"
    username = signed_in_person.username
    assert client.post(URL, {"confirm": PHRASE, "password": "a guess"}).status_code == 200
    elsewhere = Client()
    elsewhere.post("/login/", {"username": username.upper(), "password": "another guess"})
    # The username's budget is spent, on both forms.
    assert client.post(URL, {"confirm": PHRASE, "password": PASSWORD}).status_code == 429
    assert (
        elsewhere.post("/login/", {"username": username, "password": PASSWORD}).status_code == 429
    )
    _nothing_erased(client, signed_in_person)


def test_the_right_password_erases(client, signed_in_person):
    page = client.post(URL, {"confirm": PHRASE, "password": PASSWORD})
    assert page.status_code == 200 and "Your data was deleted" in page.content.decode()
    assert not get_user_model().objects.filter(pk=signed_in_person.pk).exists()
