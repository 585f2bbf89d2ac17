"""Revocation tells the truth: only a documented success counts, anything else is kept and
retried until the provider confirms; staff see what is pending, never the token."""

from __future__ import annotations

import base64
import json
import threading
import uuid
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import bson
import pytest
import requests
from django.urls import reverse
from django.utils import timezone
from django.utils.module_loading import import_string

from sources.models import PendingRevocation, UserDataSource
from sources.providers.base import OAuth2Provider, RevocationError
from sources.providers.gmail import Gmail
from sources.providers.google import GoogleProvider
from sources.providers.plaid import Plaid
from sources.providers.plaid.sandbox import plaid_item_link
from sources.revocations import (
    MAX_ATTEMPTS,
    backoff_delay,
    person_revocations_settle,
    revocation_retry,
    revocations_retry_due,
)
from sources.sandbox.faults import fault_clear, fault_set
from sources.sandbox.testing import google_credentials, google_refresh
from sources.services import connection_disconnect, connection_upsert
from tests.factories import StaffFactory

pytestmark = pytest.mark.django_db(transaction=True)
State = PendingRevocation.State


# --- A generic RFC 7009 server, for what exactly the client sends --------------------------------


class _RevocationServer(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode()
        self.server.seen.append(
            {
                "authorization": self.headers.get("Authorization"),
                "content_type": self.headers.get("Content-Type"),
                "form": parse_qs(body),
            }
        )
        status, payload = self.server.answer
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _RevocationServer)
    httpd.seen = []
    httpd.answer = (200, {})
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/oauth/revoke"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


CLIENT = {"client_id": "generic client", "client_secret": "s3cret:&="}


def provider_at(url: str, base: type[OAuth2Provider] = OAuth2Provider, **attrs: object) -> type:
    """A provider of the given kind whose revocation endpoint is ``url``."""
    return type(
        "Generic",
        (base,),
        {
            "id": "generic",
            "name": "Generic",
            "category": "external",
            "url": classmethod(lambda cls, name: url),
            "client_credentials": classmethod(lambda cls: CLIENT),
            **attrs,
        },
    )


def test_rfc7009_revocation_sends_basic_client_auth_and_the_token_type_hint(server):
    provider_at(server.url).revoke({"refresh_token": "rt-1", "access_token": "at-1"})
    (seen,) = server.seen
    assert seen["form"] == {"token": ["rt-1"], "token_type_hint": ["refresh_token"]}
    assert seen["content_type"] == "application/x-www-form-urlencoded"
    # RFC 6749 section 2.3.1: id and secret form-encoded, then HTTP Basic.
    expected = base64.b64encode(b"generic+client:s3cret%3A%26%3D").decode()
    assert seen["authorization"] == f"Basic {expected}"


def test_rfc7009_client_secret_post_and_an_access_token_alone(server):
    provider = provider_at(server.url, revocation_client_auth="client_secret_post")
    provider.revoke({"access_token": "at-2"})
    (seen,) = server.seen
    assert seen["authorization"] is None
    assert seen["form"] == {
        "token": ["at-2"],
        "token_type_hint": ["access_token"],
        "client_id": ["generic client"],
        "client_secret": ["s3cret:&="],
    }


@pytest.mark.parametrize(
    ("status", "body", "code"),
    [
        (400, {"error": "invalid_client"}, "400 invalid_client"),
        (401, {"error": "invalid_client"}, "401 invalid_client"),
        (400, {"error": "unsupported_token_type"}, "400 unsupported_token_type"),
        # Google's "already revoked" is not an RFC 7009 server's answer: not a success here.
        (400, {"error": "invalid_token"}, "400 invalid_token"),
        (503, {"error": "temporarily_unavailable"}, "503 temporarily_unavailable"),
        (500, "<html>oops</html>", "500"),
        (204, {}, "204"),
    ],
)
def test_rfc7009_only_200_counts_as_revoked(server, status, body, code):
    server.answer = (status, body)
    with pytest.raises(RevocationError) as caught:
        provider_at(server.url).revoke({"refresh_token": "rt-secret-3"})
    assert caught.value.code == code
    assert "rt-secret-3" not in f"{caught.value} {caught.value!r} {caught.value.code}"


def test_a_provider_that_cannot_be_reached_is_not_a_revocation():
    # Nothing listens on port 9; the error names the class, not the request with its token.
    provider = provider_at("http://127.0.0.1:9/revoke")
    with pytest.raises(RevocationError) as caught:
        provider.revoke({"refresh_token": "rt-secret-4"})
    assert caught.value.code == "ConnectionError"
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_google_gets_the_token_alone_and_invalid_token_means_already_revoked(server):
    google = provider_at(server.url, base=GoogleProvider)
    server.answer = (
        400,
        {"error": "invalid_token", "error_description": "Token expired or revoked"},
    )
    google.revoke({"refresh_token": "rt-5", "access_token": "at-5"})
    (seen,) = server.seen
    assert seen["form"] == {"token": ["rt-5"]} and seen["authorization"] is None
    server.answer = (400, {"error": "invalid_request"})
    with pytest.raises(RevocationError):
        google.revoke({"refresh_token": "rt-5"})


# --- Against the sandbox over HTTP ---------------------------------------------------------------


def _refresh(refresh_token: str) -> requests.Response:
    return google_refresh(Gmail, refresh_token)


def _email() -> str:
    return f"revoke-{uuid.uuid4().hex[:8]}@example.com"


def test_google_revocation_ends_the_grant_and_a_second_one_counts_as_done(sandbox):
    credentials = google_credentials(Gmail, _email())
    assert _refresh(credentials["refresh_token"]).status_code == 200
    Gmail.revoke(credentials)
    refused = _refresh(credentials["refresh_token"])
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    # Google answers 400 invalid_token now: already revoked, which is what was asked.
    Gmail.revoke(credentials)


def test_google_unavailable_is_not_a_revocation(sandbox):
    email = _email()
    credentials = google_credentials(Gmail, email)
    fault_set("google", email, "server_error")
    with pytest.raises(RevocationError) as caught:
        Gmail.revoke(credentials)
    assert caught.value.code == "503 temporarily_unavailable"
    assert _refresh(credentials["refresh_token"]).status_code == 200  # the grant is alive
    Gmail.revoke(credentials)
    assert _refresh(credentials["refresh_token"]).status_code == 400


class StrictGmail(Gmail):
    """Gmail's client, as a generic RFC 7009 provider would revoke."""

    revocation_client_auth = "client_secret_basic"
    revocation_sends_hint = True
    revocation_already_revoked = frozenset()


def test_a_strict_rfc7009_server_refuses_the_token_alone_and_takes_client_auth(sandbox, settings):
    settings.SIBLING_SANDBOX_RFC7009_CLIENTS = {"sandbox-gmail-client"}
    credentials = google_credentials(Gmail, _email())
    # What the old code did: the token alone, refused, and the grant stayed alive.
    with pytest.raises(RevocationError) as caught:
        Gmail.revoke(credentials)
    assert caught.value.code == "401 invalid_client"
    assert _refresh(credentials["refresh_token"]).status_code == 200

    StrictGmail.revoke(credentials)
    assert _refresh(credentials["refresh_token"]).json()["error"] == "invalid_grant"
    StrictGmail.revoke(credentials)  # RFC 7009: 200 for a token already invalid

    other = google_credentials(Gmail, _email())
    type("PostGmail", (StrictGmail,), {"revocation_client_auth": "client_secret_post"}).revoke(
        other
    )
    assert _refresh(other["refresh_token"]).status_code == 400


def test_plaid_removal_failure_then_success_then_already_gone(sandbox):
    exchanged = plaid_item_link(client_user_id="person-revoke")
    fault_set("plaid", exchanged["item_id"], "server_error")
    with pytest.raises(RevocationError) as caught:
        Plaid.revoke(exchanged)
    assert caught.value.code == "INTERNAL_SERVER_ERROR"
    assert exchanged["access_token"] not in f"{caught.value} {caught.value.code}"
    Plaid.revoke(exchanged)
    Plaid.revoke(exchanged)  # INVALID_ACCESS_TOKEN: the Item is already gone


def test_plaid_refusing_the_client_is_not_a_removal(sandbox, monkeypatch):
    exchanged = plaid_item_link(client_user_id="person-revoke")
    monkeypatch.setattr(
        Plaid, "client_credentials", classmethod(lambda cls: {**CLIENT, "secret": "wrong"})
    )
    with pytest.raises(RevocationError) as caught:
        Plaid.revoke(exchanged)
    assert caught.value.code == "INVALID_API_KEYS"


# --- Pending revocations: kept, retried with backoff, given up, settled --------------------------


@pytest.fixture
def gmail_connection(sandbox, person):
    email = _email()
    credentials = google_credentials(Gmail, email)
    connection = connection_upsert(
        user=person,
        provider=Gmail,
        external_account_id=email,
        credentials=credentials,
        account_label=email,
    )
    connection.sandbox_account = email
    return connection


def test_retries_back_off_then_give_up_and_stay_listed(gmail_connection, raw_db):
    email = gmail_connection.sandbox_account
    refresh_token = gmail_connection.credentials["refresh_token"]
    fault_set("google", email, "server_error", count=MAX_ATTEMPTS + 5)

    result = connection_disconnect(connection=gmail_connection, delete_data=False)
    assert not result.revoked and result.revocation_pending
    assert "503" not in result.revoke_error and refresh_token not in result.revoke_error
    pending = PendingRevocation.objects.get()
    assert pending.attempts == 1 and pending.last_error == "503 temporarily_unavailable"
    raw = raw_db[PendingRevocation._meta.db_table].find_one({"_id": pending.pk})
    assert raw["token"].subtype == 6 and refresh_token.encode() not in bson.encode(raw)
    # Not due yet: nobody is asked.
    assert revocations_retry_due() == 0
    assert PendingRevocation.objects.get().attempts == 1

    for attempt in range(2, MAX_ATTEMPTS + 1):
        before = PendingRevocation.objects.get()
        assert before.next_attempt_at - before.last_attempt_at == backoff_delay(attempt - 1)
        assert revocations_retry_due(now=before.next_attempt_at) == 0
        after = PendingRevocation.objects.get()
        assert after.attempts == attempt
    gave_up = PendingRevocation.objects.get()
    assert gave_up.state == State.GAVE_UP and gave_up.next_attempt_at is None
    assert backoff_delay(MAX_ATTEMPTS) == timedelta(hours=12)
    assert revocations_retry_due(now=timezone.now() + timedelta(days=30)) == 0
    assert _refresh(refresh_token).status_code == 200  # the grant is really still alive


def test_a_retry_run_skips_what_another_run_claimed(gmail_connection):
    fault_set("google", gmail_connection.sandbox_account, "server_error")
    connection_disconnect(connection=gmail_connection, delete_data=False)
    due = PendingRevocation.objects.get().next_attempt_at
    # Another run claimed it: next_attempt_at moved on, so this run (same moment) finds none.
    PendingRevocation.objects.update(next_attempt_at=due + timedelta(minutes=2))
    assert revocations_retry_due(now=due) == 0
    assert PendingRevocation.objects.get().attempts == 1


def test_staff_disconnect_action_says_when_the_provider_has_not_confirmed(gmail_connection, client):
    client.force_login(
        StaffFactory(is_superuser=True), backend="django.contrib.auth.backends.ModelBackend"
    )
    fault_set("google", gmail_connection.sandbox_account, "server_error")
    answer = client.post(
        reverse("admin:sources_userdatasource_changelist"),
        {"action": "disconnect_keep_data", "_selected_action": [str(gmail_connection.pk)]},
        follow=True,
    )
    said = [str(message) for message in answer.context["messages"]]
    assert "Disconnected: 1." in said
    assert any("has not confirmed" in text for text in said)
    assert PendingRevocation.objects.filter(connection_id=gmail_connection.pk).count() == 1


def test_erasure_tries_once_more_then_deletes_them(gmail_connection, person):
    email = gmail_connection.sandbox_account
    refresh_token = gmail_connection.credentials["refresh_token"]
    fault_set("google", email, "server_error")
    connection_disconnect(connection=gmail_connection, delete_data=True)
    assert PendingRevocation.objects.filter(user=person).count() == 1
    assert person_revocations_settle(user_id=person.pk) == []
    assert not PendingRevocation.objects.exists()
    assert _refresh(refresh_token).status_code == 400


def test_an_erasure_that_still_cannot_revoke_reports_it_and_the_account_takes_them_along(
    gmail_connection, person
):
    fault_set("google", gmail_connection.sandbox_account, "server_error", count=3)
    connection_disconnect(connection=gmail_connection, delete_data=False)
    assert person_revocations_settle(user_id=person.pk) == ["Gmail"]
    assert not PendingRevocation.objects.exists()
    # Without the settling step, deleting the account deletes them too (on_delete=CASCADE).
    second = _email()
    other = connection_upsert(
        user=person,
        provider=Gmail,
        external_account_id=second,
        credentials=google_credentials(Gmail, second),
    )
    fault_set("google", second, "server_error")
    connection_disconnect(connection=other, delete_data=False)
    assert PendingRevocation.objects.filter(user=person).exists()
    person.delete()
    assert not PendingRevocation.objects.exists()


# --- Staff ---------------------------------------------------------------------------------------


def _pending_for(person, connection) -> PendingRevocation:
    fault_set("google", connection.sandbox_account, "server_error")
    connection_disconnect(connection=connection, delete_data=False)
    return PendingRevocation.objects.get(user=person)


def test_a_retry_of_a_row_settled_meanwhile_neither_fails_nor_brings_it_back(
    gmail_connection, person
):
    # Two hands on one row: a retry run (or staff's "Retry now") read it, then an erasure
    # settled it or another attempt was confirmed and deleted it before this attempt ended.
    pending = _pending_for(person, gmail_connection)
    fault_set("google", gmail_connection.sandbox_account, "server_error")
    PendingRevocation.objects.filter(pk=pending.pk).delete()
    assert revocation_retry(pending=pending) is False
    assert not PendingRevocation.objects.exists()


def test_view_only_staff_see_pending_revocations_without_the_token(
    client, gmail_connection, person
):
    token = gmail_connection.credentials["refresh_token"]
    pending = _pending_for(person, gmail_connection)
    viewer = StaffFactory(permissions=("sources.view_pendingrevocation",))
    client.force_login(viewer)
    listing = client.get(reverse("admin:sources_pendingrevocation_changelist"))
    assert listing.status_code == 200
    page = listing.content.decode()
    assert person.email in page and "503 temporarily_unavailable" in page
    assert token not in page and "Retry now" not in page
    detail = client.get(reverse("admin:sources_pendingrevocation_change", args=[pending.pk]))
    assert detail.status_code == 200 and token not in detail.content.decode()
    # A view-only staff member cannot run the action by posting it either.
    client.post(
        reverse("admin:sources_pendingrevocation_changelist"),
        {"action": "retry_now", "_selected_action": [str(pending.pk)]},
    )
    assert PendingRevocation.objects.get().attempts == 1


def test_staff_find_a_persons_pending_revocations_by_their_email(client, gmail_connection, person):
    _pending_for(person, gmail_connection)
    someone_else = StaffFactory()  # another account, whose email must not match
    client.force_login(StaffFactory(permissions=("sources.view_pendingrevocation",)))
    url = reverse("admin:sources_pendingrevocation_changelist")
    found = client.get(url, {"q": person.email}).content.decode()
    assert "1 pending revocation\n" in found and person.email in found
    missed = client.get(url, {"q": someone_else.email}).content.decode()
    assert "0 pending revocations" in missed and person.email not in missed


def test_staff_without_the_permission_do_not_see_them(client, gmail_connection, person):
    _pending_for(person, gmail_connection)
    client.force_login(StaffFactory(permissions=("sources.view_userdatasource",)))
    response = client.get(reverse("admin:sources_pendingrevocation_changelist"))
    assert response.status_code == 403


def test_staff_who_may_change_retry_now(client, gmail_connection, person):
    pending = _pending_for(person, gmail_connection)
    fault_clear("google", gmail_connection.sandbox_account)
    client.force_login(
        StaffFactory(
            permissions=("sources.view_pendingrevocation", "sources.change_pendingrevocation")
        )
    )
    url = reverse("admin:sources_pendingrevocation_changelist")
    assert "Retry now" in client.get(url).content.decode()
    page = client.post(
        url, {"action": "retry_now", "_selected_action": [str(pending.pk)]}, follow=True
    )
    assert "Confirmed by the provider: 1 of 1." in page.content.decode()
    assert not PendingRevocation.objects.exists()


def test_a_deleted_connection_keeps_its_pending_revocation(gmail_connection, person):
    fault_set("google", gmail_connection.sandbox_account, "server_error")
    result = connection_disconnect(connection=gmail_connection, delete_data=True)
    assert result.data_deleted and result.revocation_pending
    assert not UserDataSource.objects.filter(pk=gmail_connection.pk).exists()
    pending = PendingRevocation.objects.get(user=person)
    assert pending.connection_id is None and pending.provider == "gmail"


def test_the_retry_task_is_scheduled_every_few_minutes_and_retries_what_is_due(
    gmail_connection, person
):
    from django.apps import apps
    from django_q.models import Schedule

    from ingestion.signals import setup_after_migrate

    setup_after_migrate(sender=None, app_config=apps.get_app_config("ingestion"))
    schedule = Schedule.objects.get(name="revocation-retry")
    assert schedule.func == "sources.tasks.revocations_retry"
    assert schedule.schedule_type == Schedule.MINUTES and schedule.minutes == 5

    fault_set("google", gmail_connection.sandbox_account, "server_error")
    connection_disconnect(connection=gmail_connection, delete_data=False)
    PendingRevocation.objects.update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    assert import_string(schedule.func)() == 1
    assert not PendingRevocation.objects.exists()
