"""Revocation tells the truth: only a documented success counts, anything else is kept and
retried until the provider confirms; staff see what is pending, never the token."""

from __future__ import annotations

import base64
import json
import threading
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
from sources.providers.google import GoogleProvider
from sources.revocations import (
    MAX_ATTEMPTS,
    backoff_delay,
    person_revocations_settle,
    revocation_retry,
    revocations_retry_due,
)
from sources.services import connection_disconnect
from tests.factories import StaffFactory
from tests.sources.providers.kit import (
    sandbox_connection,
    sandbox_fault,
    sandbox_fault_clear,
    token_refresh,
)

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


# --- Pending revocations: kept, retried with backoff, given up, settled --------------------------


@pytest.fixture
def connection(sandbox, person):
    """A connection to an OAuth2 provider, whose revocation the sandbox can refuse."""
    return sandbox_connection(person, auth_mode="oauth2")


def _refresh(connection, refresh_token: str) -> requests.Response:
    return token_refresh(connection.provider_class, refresh_token)


def test_retries_back_off_then_give_up_and_stay_listed(connection, raw_db):
    refresh_token = connection.credentials["refresh_token"]
    sandbox_fault(connection, "server_error", count=MAX_ATTEMPTS + 5)

    result = connection_disconnect(connection=connection, delete_data=False)
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
    assert _refresh(connection, refresh_token).status_code == 200  # the grant is really still alive


def test_a_retry_run_skips_what_another_run_claimed(connection):
    sandbox_fault(connection, "server_error")
    connection_disconnect(connection=connection, delete_data=False)
    due = PendingRevocation.objects.get().next_attempt_at
    # Another run claimed it: next_attempt_at moved on, so this run (same moment) finds none.
    PendingRevocation.objects.update(next_attempt_at=due + timedelta(minutes=2))
    assert revocations_retry_due(now=due) == 0
    assert PendingRevocation.objects.get().attempts == 1


def test_staff_disconnect_action_says_when_the_provider_has_not_confirmed(connection, client):
    client.force_login(
        StaffFactory(is_superuser=True), backend="django.contrib.auth.backends.ModelBackend"
    )
    sandbox_fault(connection, "server_error")
    answer = client.post(
        reverse("admin:sources_userdatasource_changelist"),
        {"action": "disconnect_keep_data", "_selected_action": [str(connection.pk)]},
        follow=True,
    )
    said = [str(message) for message in answer.context["messages"]]
    assert "Disconnected: 1." in said
    assert any("has not confirmed" in text for text in said)
    assert PendingRevocation.objects.filter(connection_id=connection.pk).count() == 1


def test_erasure_tries_once_more_then_deletes_them(connection, person):
    refresh_token = connection.credentials["refresh_token"]
    sandbox_fault(connection, "server_error")
    connection_disconnect(connection=connection, delete_data=True)
    assert PendingRevocation.objects.filter(user=person).count() == 1
    assert person_revocations_settle(user_id=person.pk) == []
    assert not PendingRevocation.objects.exists()
    assert _refresh(connection, refresh_token).status_code == 400


def test_an_erasure_that_still_cannot_revoke_reports_it_and_the_account_takes_them_along(
    connection, person
):
    sandbox_fault(connection, "server_error", 3)
    connection_disconnect(connection=connection, delete_data=False)
    assert person_revocations_settle(user_id=person.pk) == [connection.provider_class.name]
    assert not PendingRevocation.objects.exists()
    # Without the settling step, deleting the account deletes them too (on_delete=CASCADE).
    other = sandbox_connection(person, connection.provider_class)
    sandbox_fault(other, "server_error")
    connection_disconnect(connection=other, delete_data=False)
    assert PendingRevocation.objects.filter(user=person).exists()
    person.delete()
    assert not PendingRevocation.objects.exists()


# --- Staff ---------------------------------------------------------------------------------------


def _pending_for(person, connection) -> PendingRevocation:
    sandbox_fault(connection, "server_error")
    connection_disconnect(connection=connection, delete_data=False)
    return PendingRevocation.objects.get(user=person)


def test_a_retry_of_a_row_settled_meanwhile_neither_fails_nor_brings_it_back(connection, person):
    # Two hands on one row: a retry run (or staff's "Retry now") read it, then an erasure
    # settled it or another attempt was confirmed and deleted it before this attempt ended.
    pending = _pending_for(person, connection)
    sandbox_fault(connection, "server_error")
    PendingRevocation.objects.filter(pk=pending.pk).delete()
    assert revocation_retry(pending=pending) is False
    assert not PendingRevocation.objects.exists()


def test_view_only_staff_see_pending_revocations_without_the_token(client, connection, person):
    token = connection.credentials["refresh_token"]
    pending = _pending_for(person, connection)
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


def test_staff_find_a_persons_pending_revocations_by_their_email(client, connection, person):
    _pending_for(person, connection)
    someone_else = StaffFactory()  # another account, whose email must not match
    client.force_login(StaffFactory(permissions=("sources.view_pendingrevocation",)))
    url = reverse("admin:sources_pendingrevocation_changelist")
    found = client.get(url, {"q": person.email}).content.decode()
    assert "1 pending revocation\n" in found and person.email in found
    missed = client.get(url, {"q": someone_else.email}).content.decode()
    assert "0 pending revocations" in missed and person.email not in missed


def test_staff_without_the_permission_do_not_see_them(client, connection, person):
    _pending_for(person, connection)
    client.force_login(StaffFactory(permissions=("sources.view_userdatasource",)))
    response = client.get(reverse("admin:sources_pendingrevocation_changelist"))
    assert response.status_code == 403


def test_staff_who_may_change_retry_now(client, connection, person):
    pending = _pending_for(person, connection)
    sandbox_fault_clear(connection)
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


def test_a_deleted_connection_keeps_its_pending_revocation(connection, person):
    sandbox_fault(connection, "server_error")
    result = connection_disconnect(connection=connection, delete_data=True)
    assert result.data_deleted and result.revocation_pending
    assert not UserDataSource.objects.filter(pk=connection.pk).exists()
    pending = PendingRevocation.objects.get(user=person)
    assert pending.connection_id is None and pending.provider == connection.provider


def test_the_retry_task_is_scheduled_every_few_minutes_and_retries_what_is_due(connection, person):
    from django.apps import apps
    from django_q.models import Schedule

    from ingestion.signals import setup_after_migrate

    setup_after_migrate(sender=None, app_config=apps.get_app_config("ingestion"))
    schedule = Schedule.objects.get(name="revocation-retry")
    assert schedule.func == "sources.tasks.revocations_retry"
    assert schedule.schedule_type == Schedule.MINUTES and schedule.minutes == 5

    sandbox_fault(connection, "server_error")
    connection_disconnect(connection=connection, delete_data=False)
    PendingRevocation.objects.update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    assert import_string(schedule.func)() == 1
    assert not PendingRevocation.objects.exists()
