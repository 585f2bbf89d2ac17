"""Alerts by email, end to end: a sync refused by the sandbox over HTTP (or a provider's expiry
notice) opens an incident, a task sends one email through Django's email (locmem in tests), and
the incident closes when the connection works again.

These take whichever registered provider has the auth mode they need; none is named."""

import threading
from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from alerts import services, tasks
from alerts.models import Incident
from ingestion.notifications import connection_notice
from sibling.people import person_of
from sources.models import UserDataSource
from sources.services import connection_disconnect, connection_upsert
from sources.signals import EXPIRING, REAUTH_REQUIRED, connection_changed_send
from tests.ingestion.conftest import fresh, stored, sync
from tests.sources.providers.kit import sandbox_fault, sandbox_fault_clear

pytestmark = pytest.mark.django_db(transaction=True)
Status = UserDataSource.Status
EmailState = Incident.EmailState
EXPIRY_TEXT = "Your provider will soon stop sharing data with Sibling. Reconnect to keep it."


def refuse_grant(connection):
    """The provider refuses the connection's grant on the next sync (sign-in needed)."""
    sandbox_fault(connection, "revoke")
    sandbox_fault(connection, "expire_access_token")


def fail_until_stopped(connection, settings):
    settings.SIBLING_SYNC_MAX_FAILURES = 2
    for _ in range(2):
        sandbox_fault(connection, "server_error", count=50)
        UserDataSource.objects.filter(pk=connection.pk).update(next_sync_at=timezone.now())
        sync(connection)
    sandbox_fault_clear(connection)
    assert fresh(connection).status == Status.ERROR


def email_text(message) -> str:
    """Everything a reader (or a mail server) sees of the email."""
    parts = [message.subject, message.body, *(str(v) for v in message.extra_headers.values())]
    parts += [content for content, _mime in message.alternatives]
    return "\n".join(parts)


def reconnect(connection):
    """The connect flow's store step for the same account, as a reconnect makes it."""
    connection = fresh(connection)
    return connection_upsert(
        user=connection.user,
        provider=connection.provider_class,
        external_account_id=connection.external_account_id,
        credentials=connection.credentials,
    )


# --- Each incident type ----------------------------------------------------------------------


def test_a_refused_grant_emails_the_person_once_with_a_link_to_fix_it(
    oauth_connection, person, settings
):
    refuse_grant(oauth_connection)
    sync(oauth_connection)
    assert fresh(oauth_connection).status == Status.REAUTH_REQUIRED
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    name = oauth_connection.provider_class.name
    assert message.to == [person.email]
    assert message.subject == f"Sign in to {name} again to keep it syncing"
    fix_url = f"{settings.SIBLING_PUBLIC_URL}/connections/#card-{oauth_connection.provider}"
    assert fix_url in message.body and fix_url in message.alternatives[0][0]
    assert "Reconnect" in message.body
    stop_url = message.extra_headers["List-Unsubscribe"].strip("<>")
    assert stop_url.startswith(f"{settings.SIBLING_PUBLIC_URL}/alerts/stop/")
    assert stop_url in message.body
    assert message.extra_headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    incident = Incident.objects.get(connection=oauth_connection)
    assert incident.kind == REAUTH_REQUIRED and incident.email_state == EmailState.SENT

    # Refused again, and told again by another path: the same incident, no second email.
    sync(oauth_connection)
    connection_changed_send(fresh(oauth_connection), REAUTH_REQUIRED)
    assert len(mail.outbox) == 1
    assert Incident.objects.filter(connection=oauth_connection).count() == 1


def test_a_connection_stopped_after_repeated_failures_emails_once(key_connection, settings):
    fail_until_stopped(key_connection, settings)
    assert len(mail.outbox) == 1
    name = key_connection.provider_class.name
    assert mail.outbox[0].subject == f"{name} has stopped syncing"
    assert "stopped trying" in mail.outbox[0].body
    # Another failure report while stopped changes nothing.
    connection_changed_send(fresh(key_connection), "stopped")
    assert len(mail.outbox) == 1


def test_an_expiry_notice_emails_once_per_incident(key_connection):
    connection_notice(fresh(key_connection), EXPIRY_TEXT, change=EXPIRING)
    assert len(mail.outbox) == 1
    name = key_connection.provider_class.name
    assert mail.outbox[0].subject == f"{name} will stop sharing your data soon"
    # The provider repeats itself, or words it differently: still the same incident.
    connection_notice(fresh(key_connection), EXPIRY_TEXT, change=EXPIRING)
    connection_notice(fresh(key_connection), EXPIRY_TEXT + " Soon.", change=EXPIRING)
    assert len(mail.outbox) == 1
    # A successful sync does not end it (the provider still stops sharing): a reconnect does.
    assert sync(key_connection).outcome == "success"
    connection_notice(fresh(key_connection), EXPIRY_TEXT, change=EXPIRING)
    assert len(mail.outbox) == 1
    reconnect(key_connection)
    connection_notice(fresh(key_connection), EXPIRY_TEXT, change=EXPIRING)
    assert len(mail.outbox) == 2


# --- Closing: reconnect, success, disconnect -----------------------------------------------


def test_after_a_reconnect_a_new_refusal_emails_again(oauth_connection):
    refuse_grant(oauth_connection)
    sync(oauth_connection)
    assert len(mail.outbox) == 1
    reconnect(oauth_connection)
    incident = Incident.objects.get(connection=oauth_connection)
    assert incident.closed_by == Incident.Closed.RECONNECTED and incident.closed_at
    # The grant is refused again (the reconnect brought back the same refused tokens here).
    refuse_grant(oauth_connection)
    sync(oauth_connection)
    assert fresh(oauth_connection).status == Status.REAUTH_REQUIRED
    assert len(mail.outbox) == 2
    assert Incident.objects.filter(connection=oauth_connection, closed_at=None).count() == 1


def test_a_successful_sync_ends_the_incident_so_the_next_stop_emails_again(
    key_connection, settings
):
    fail_until_stopped(key_connection, settings)
    assert len(mail.outbox) == 1
    # Staff set it going again; it syncs; then it fails again until it stops.
    UserDataSource.objects.filter(pk=key_connection.pk).update(
        status=Status.ACTIVE, consecutive_failures=0, next_sync_at=timezone.now()
    )
    assert sync(key_connection).outcome == "success"
    fail_until_stopped(key_connection, settings)
    assert len(mail.outbox) == 2
    first, second = Incident.objects.filter(connection=key_connection).order_by("opened_at")
    assert first.closed_by == Incident.Closed.SYNCED and second.is_open


def test_stopping_again_without_any_success_is_the_same_incident(key_connection, settings):
    fail_until_stopped(key_connection, settings)
    UserDataSource.objects.filter(pk=key_connection.pk).update(
        status=Status.ACTIVE, consecutive_failures=0, next_sync_at=timezone.now()
    )
    fail_until_stopped(key_connection, settings)
    assert len(mail.outbox) == 1


def test_an_incident_resolved_before_its_email_went_out_sends_nothing(oauth_connection):
    incident = services.incident_open(connection=fresh(oauth_connection), kind=REAUTH_REQUIRED)
    reconnect(oauth_connection)  # before the worker got to it
    assert tasks.incident_email(str(incident.pk)) == "not claimed"
    incident.refresh_from_db()
    assert incident.email_state == EmailState.SKIPPED and not mail.outbox


def test_disconnecting_closes_and_deleting_the_data_removes_the_incidents(key_connection):
    connection_notice(fresh(key_connection), EXPIRY_TEXT, change=EXPIRING)
    connection_disconnect(connection=fresh(key_connection), delete_data=False)
    incident = Incident.objects.get(connection=key_connection)
    assert incident.closed_by == Incident.Closed.DISCONNECTED
    connection_disconnect(connection=fresh(key_connection), delete_data=True)
    assert not Incident.objects.filter(connection_id=key_connection.pk).exists()


# --- One email, whatever the retries ---------------------------------------------------------


def test_a_task_delivered_again_sends_nothing_more(oauth_connection):
    refuse_grant(oauth_connection)
    sync(oauth_connection)
    incident = Incident.objects.get(connection=oauth_connection)
    assert tasks.incident_email(str(incident.pk)) == "not claimed"
    assert tasks.incidents_email_due() == 0
    assert len(mail.outbox) == 1


def test_workers_racing_on_one_incident_send_one_email(key_connection):
    UserDataSource.objects.filter(pk=key_connection.pk).update(status=Status.REAUTH_REQUIRED)
    connection = fresh(key_connection)
    reports = 4
    barrier = threading.Barrier(reports)
    opened = []

    def report():
        barrier.wait()
        opened.append(services.incident_open(connection=connection, kind=REAUTH_REQUIRED))

    threads = [threading.Thread(target=report) for _ in range(reports)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    incidents = [i for i in opened if i is not None]
    assert len(incidents) == 1

    barrier = threading.Barrier(reports)
    results = []

    def send():
        barrier.wait()
        results.append(tasks.incident_email(str(incidents[0].pk)))

    threads = [threading.Thread(target=send) for _ in range(reports)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["not claimed"] * (reports - 1) + [EmailState.SENT]
    assert len(mail.outbox) == 1


def test_a_sender_that_died_mid_claim_is_replaced_once(key_connection):
    incident = services.incident_open(connection=fresh(key_connection), kind=REAUTH_REQUIRED)
    UserDataSource.objects.filter(pk=key_connection.pk).update(status=Status.REAUTH_REQUIRED)
    past = timezone.now() - timedelta(seconds=1)
    # A worker claimed it and was killed before sending; its claim has run out.
    Incident.objects.filter(pk=incident.pk).update(
        email_state=EmailState.SENDING, email_claimed_until=past, email_next_attempt_at=past
    )
    assert tasks.incident_email(str(incident.pk)) == EmailState.SENT
    assert tasks.incident_email(str(incident.pk)) == "not claimed"
    assert len(mail.outbox) == 1


def test_the_sweep_finds_a_claim_whose_sender_died_and_sends_it_once(key_connection):
    UserDataSource.objects.filter(pk=key_connection.pk).update(status=Status.REAUTH_REQUIRED)
    incident = services.incident_open(connection=fresh(key_connection), kind=REAUTH_REQUIRED)
    # A worker claimed it and was killed before sending, and its task is gone for good.
    claimed = services._email_claim(incident.pk)
    assert claimed.email_state == EmailState.SENDING
    assert tasks.incidents_email_due() == 0  # its claim still stands
    past = timezone.now() - timedelta(seconds=1)
    Incident.objects.filter(pk=incident.pk).update(
        email_claimed_until=past, email_next_attempt_at=past
    )
    assert tasks.incidents_email_due() == 1
    assert tasks.incidents_email_due() == 0
    assert len(mail.outbox) == 1
    incident.refresh_from_db()
    assert incident.email_state == EmailState.SENT and incident.email_attempts == 2


class RefusingBackend:
    """An SMTP server that refuses every message (as an outage looks to Django)."""

    def __init__(self, *args, **kwargs):
        pass

    def send_messages(self, messages):
        import smtplib

        raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")


def test_a_failed_send_is_tried_again_later_and_sent_once(key_connection, settings, caplog):
    settings.EMAIL_BACKEND = f"{__name__}.RefusingBackend"
    connection_notice(fresh(key_connection), EXPIRY_TEXT, change=EXPIRING)
    incident = Incident.objects.get(connection=key_connection)
    assert incident.email_state == EmailState.PENDING
    assert incident.email_note == "SMTPServerDisconnected"
    assert incident.email_next_attempt_at > timezone.now()
    assert tasks.incidents_email_due() == 0  # not yet due
    assert key_connection.user.email not in caplog.text

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    Incident.objects.filter(pk=incident.pk).update(email_next_attempt_at=timezone.now())
    assert tasks.incidents_email_due() == 1
    assert tasks.incidents_email_due() == 0
    assert len(mail.outbox) == 1
    incident.refresh_from_db()
    assert incident.email_state == EmailState.SENT and incident.email_attempts == 2


# --- Opting out ------------------------------------------------------------------------------


def test_no_email_when_the_person_turned_alert_emails_off(oauth_connection, person):
    person_of(person).__class__.objects.filter(user=person).update(alert_emails=False)
    refuse_grant(oauth_connection)
    sync(oauth_connection)
    assert fresh(oauth_connection).status == Status.REAUTH_REQUIRED
    assert not mail.outbox
    incident = Incident.objects.get(connection=oauth_connection)
    assert incident.email_state == EmailState.SKIPPED
    assert incident.email_note == "alert emails are turned off"


def test_no_email_without_an_address(key_connection, person):
    type(person).objects.filter(pk=person.pk).update(email="")
    connection_notice(fresh(key_connection), EXPIRY_TEXT, change=EXPIRING)
    assert not mail.outbox
    assert Incident.objects.get(connection=key_connection).email_note == "no email address"


# --- What the email holds --------------------------------------------------------------------


def test_the_email_holds_no_token_label_account_id_or_record_value(oauth_connection, person):
    assert sync(oauth_connection).outcome in ("success", "partial")
    connection = fresh(oauth_connection)
    credentials = connection.credentials
    secrets = [str(v) for v in credentials.values() if isinstance(v, str) and len(v) >= 6]
    assert secrets
    secrets += [connection.external_account_id, connection.account_label or "x" * 40]
    from ingestion.storage import record_decode

    values = set()
    for document in stored(connection)[:20]:
        data = record_decode(document, owner_id=person.pk)["data"]
        values |= {v for v in data.values() if isinstance(v, str) and len(v) >= 6}
    values.discard(connection.provider_class.name)
    refuse_grant(oauth_connection)
    sync(oauth_connection)
    assert len(mail.outbox) == 1
    text = email_text(mail.outbox[0])
    for secret in [*secrets, *values]:
        assert secret not in text
    assert str(person.pk) not in text and person.username not in text
    # Nor the pseudonymous id Sibling's other modules know the person by.
    assert person_of(person).public_id not in text


def test_erasing_the_person_leaves_no_alert_of_theirs(key_connection, person):
    from ingestion.erasure import person_erase

    connection_notice(fresh(key_connection), EXPIRY_TEXT, change=EXPIRING)
    assert Incident.objects.filter(user=person).exists()
    person_erase(user=person)
    assert not Incident.objects.filter(user_id=person.pk).exists()


def test_the_sync_only_enqueues_and_a_worker_sends(oauth_connection, monkeypatch):
    from django.utils.module_loading import import_string
    from django_q.conf import Conf
    from django_q.signing import SignedPackage

    from sibling.queue import broker

    monkeypatch.setattr(Conf, "SYNC", False)  # as in production: tasks go to the broker
    queue = broker()
    queue.purge_queue()
    refuse_grant(oauth_connection)
    sync(oauth_connection)
    assert not mail.outbox  # nothing was sent inside the sync
    tasks_queued = []
    while batch := queue.dequeue():
        tasks_queued += [SignedPackage.loads(pack) for _id, pack in batch]
    alerts_queued = [t for t in tasks_queued if t["func"] == "alerts.tasks.incident_email"]
    assert len(alerts_queued) == 1
    task = alerts_queued[0]
    assert import_string(task["func"])(*task["args"]) == EmailState.SENT
    assert len(mail.outbox) == 1


def test_a_sweep_that_runs_again_before_the_workers_queues_nothing_twice(
    key_connection, monkeypatch
):
    from django_q.conf import Conf
    from django_q.signing import SignedPackage

    from sibling.queue import broker

    UserDataSource.objects.filter(pk=key_connection.pk).update(status=Status.REAUTH_REQUIRED)
    incident = services.incident_open(connection=fresh(key_connection), kind=REAUTH_REQUIRED)
    Incident.objects.filter(pk=incident.pk).update(email_next_attempt_at=timezone.now())
    monkeypatch.setattr(Conf, "SYNC", False)
    queue = broker()
    queue.purge_queue()
    assert tasks.incidents_email_due() == 1
    assert tasks.incidents_email_due() == 0  # its task has not run yet: not queued again
    queued = []
    while batch := queue.dequeue():
        queued += [SignedPackage.loads(pack)["args"] for _id, pack in batch]
    assert queued == [(str(incident.pk),)]
    assert tasks.incident_email(str(incident.pk)) == EmailState.SENT
