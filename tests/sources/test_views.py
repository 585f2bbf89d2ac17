"""People's pages: sign up, Connections, actions; a person acts on their own connections only."""

from datetime import timedelta

import pytest
from bson import ObjectId
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from sources.models import PendingRevocation, UserDataSource
from tests.factories import UserDataSourceFactory, UserFactory

pytestmark = pytest.mark.django_db
Status = UserDataSource.Status


def test_sign_up_signs_in_and_shows_the_four_sources(client):
    response = client.post(
        reverse("signup"),
        {
            "username": "ada",
            "email": "Ada@Example.com",
            "password1": "a long and unusual passphrase",
            "password2": "a long and unusual passphrase",
        },
        follow=True,
    )
    assert response.redirect_chain[-1][0] == reverse("sources:connections")
    assert get_user_model().objects.get(username="ada").email == "ada@example.com"
    page = response.content.decode()
    for name in ("Gmail", "Bank (Plaid)", "Fitbit", "RescueTime"):
        assert name in page
    assert page.count("Not connected.") == 4


def test_pages_need_a_signed_in_person(client):
    response = client.get(reverse("sources:connections"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_log_in_and_out(client):
    UserFactory(username="grace")
    response = client.post(
        reverse("login"), {"username": "grace", "password": "correct horse battery staple"}
    )
    assert response.status_code == 302
    assert client.get(reverse("sources:connections")).status_code == 200
    client.post(reverse("logout"))
    assert client.get(reverse("sources:connections")).status_code == 302


def test_card_shows_status_counts_next_sync_and_actions(signed_in, person):
    connection = UserDataSourceFactory(user=person, records_stored=1234, sandbox=True)
    page = signed_in.get(reverse("sources:connections")).content.decode()
    assert "1234" in page and "Sandbox" in page
    for action in ("sync", "pause"):
        assert reverse("sources:action", args=[connection.pk, action]) in page
    assert reverse("sources:disconnect", args=[connection.pk]) in page


def test_reauth_is_explained_in_plain_language(signed_in, person):
    UserDataSourceFactory(
        user=person, provider="plaid", status=Status.REAUTH_REQUIRED, account_label="My bank"
    )
    page = signed_in.get(reverse("sources:connections")).content.decode()
    assert "Your bank asks you to sign in again." in page
    assert "Reconnect" in page


def test_pause_resume_and_sync_now(signed_in, person):
    connection = UserDataSourceFactory(user=person, next_sync_at=None)
    signed_in.post(reverse("sources:action", args=[connection.pk, "pause"]))
    connection.refresh_from_db()
    assert connection.status == Status.PAUSED
    signed_in.post(reverse("sources:action", args=[connection.pk, "resume"]))
    connection.refresh_from_db()
    assert connection.status == Status.ACTIVE and connection.next_sync_at is not None
    connection.next_sync_at = None
    connection.save()
    signed_in.post(reverse("sources:action", args=[connection.pk, "sync"]))
    connection.refresh_from_db()
    assert connection.next_sync_at is not None


@pytest.mark.parametrize(
    ("method", "url_name", "args"),
    [
        ("get", "sources:disconnect", []),
        ("post", "sources:disconnect", []),
        ("post", "sources:action", ["pause"]),
        ("post", "sources:action", ["sync"]),
    ],
)
def test_another_persons_connection_is_not_found(signed_in, method, url_name, args):
    theirs = UserDataSourceFactory(user=UserFactory())
    url = reverse(url_name, args=[theirs.pk, *args])
    response = getattr(signed_in, method)(url, {"data": "delete"})
    assert response.status_code == 404
    theirs.refresh_from_db()
    assert theirs.status == Status.ACTIVE


@pytest.mark.parametrize("bad_id", ["not-an-id", str(ObjectId())])
def test_unknown_connection_ids_are_not_found(signed_in, bad_id):
    assert signed_in.get(reverse("sources:disconnect", args=[bad_id])).status_code == 404


def test_unknown_action_is_not_found(signed_in, person):
    connection = UserDataSourceFactory(user=person)
    response = signed_in.post(reverse("sources:action", args=[connection.pk, "explode"]))
    assert response.status_code == 404


def test_every_form_needs_the_csrf_token(person):
    client = Client(enforce_csrf_checks=True)
    client.force_login(person, backend="django.contrib.auth.backends.ModelBackend")
    connection = UserDataSourceFactory(user=person)
    for url in (
        reverse("sources:action", args=[connection.pk, "pause"]),
        reverse("sources:disconnect", args=[connection.pk]),
        reverse("sources:rescuetime_connect"),
        reverse("sources:plaid_link_token"),
        reverse("social:begin", args=["gmail"]),
    ):
        assert client.post(url, {"data": "delete"}).status_code == 403, url
    connection.refresh_from_db()
    assert connection.status == Status.ACTIVE


def test_actions_need_post(signed_in, person):
    connection = UserDataSourceFactory(user=person)
    response = signed_in.get(reverse("sources:action", args=[connection.pk, "pause"]))
    assert response.status_code == 405


def test_a_connection_stopped_by_failures_says_why(signed_in, person):
    UserDataSourceFactory(
        user=person, status=Status.ERROR, last_error="RescueTime answered 503", next_sync_at=None
    )
    page = signed_in.get(reverse("sources:connections")).content.decode()
    assert "so it has stopped" in page and "RescueTime answered 503" in page
    assert "Reconnect" in page


def _pending(person, connection=None, **fields) -> PendingRevocation:
    defaults = {
        "attempts": 1,
        "next_attempt_at": timezone.now() + timedelta(minutes=5),
        "last_error": "503 temporarily_unavailable",
    }
    return PendingRevocation.objects.create(
        user=person,
        connection=connection,
        provider=connection.provider if connection else "gmail",
        token="1//0-secret-refresh-token",
        token_type_hint="refresh_token",
        **{**defaults, **fields},
    )


def test_connections_warn_while_a_revocation_is_not_confirmed(signed_in, person):
    connection = UserDataSourceFactory(
        user=person, provider="plaid", status=Status.DISCONNECTED, account_label="My bank"
    )
    _pending(person, connection)
    page = signed_in.get(reverse("sources:connections")).content.decode()
    assert "Waiting for Bank (Plaid)." in page
    assert "You disconnected My bank" in page and "has not confirmed yet" in page
    assert "1//0-secret-refresh-token" not in page and "503" not in page


def test_connections_say_when_sibling_gave_up_asking(signed_in, person):
    UserDataSourceFactory(user=person)  # connecting is what creates the person's data key
    _pending(person, state=PendingRevocation.State.GAVE_UP, next_attempt_at=None)
    page = signed_in.get(reverse("sources:connections")).content.decode()
    assert "Access not confirmed withdrawn." in page
    assert "Please remove Sibling's access in your account settings at Gmail." in page


def test_another_persons_pending_revocation_is_not_shown(signed_in, person):
    other = UserFactory()
    UserDataSourceFactory(user=other)  # their data key
    _pending(other)
    page = signed_in.get(reverse("sources:connections")).content.decode()
    assert "Waiting for" not in page and "not confirmed" not in page


def test_the_disconnect_page_mentions_an_earlier_unconfirmed_revocation(signed_in, person):
    connection = UserDataSourceFactory(user=person, provider="gmail", status=Status.DISCONNECTED)
    _pending(person, connection)
    page = signed_in.get(reverse("sources:disconnect", args=[connection.pk])).content.decode()
    assert "has not confirmed yet that Sibling's access from an earlier disconnect" in page
