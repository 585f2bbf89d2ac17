"""Admin as the staff who work in it: a view-only staff member sees lists, details and the
dashboard and can change nothing; staff without permissions see nothing; exporting and erasing
a person need their own permissions; a superuser does everything."""

import io
import zipfile

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from ingestion.admin import ERASE_CONFIRM_WRONG, ERASE_REAUTH_FAILED, ERASE_STAFF_REFUSED
from ingestion.models import AccessLedgerEntry, QuarantinedItem, SyncRun, WebhookEvent
from ingestion.views import ERASE_TOO_MANY_WRONG_PASSWORDS
from sources.models import UserDataSource
from tests.factories import (
    STAFF_VIEW_PERMISSIONS,
    StaffFactory,
    UserDataSourceFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"  # every factory user's
Status = UserDataSource.Status
CONNECTION_ACTIONS = ("sync_now", "pause", "resume", "full_resync", "disconnect_keep_data")
PRIVACY_EXPORTER = (
    "ingestion.view_person_privacy",
    "ingestion.export_person_data",
    "ingestion.erase_person",
)


def log_in(client, user):
    client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
    return client


@pytest.fixture
def connection():
    return UserDataSourceFactory(status=Status.ACTIVE, cursors={"hours": "2026-01-01"})


@pytest.fixture
def admin_rows(connection):
    """One row of each kind staff look at, all about the connection's person."""
    now = timezone.now()
    run = SyncRun.objects.create(
        connection=connection,
        user=connection.user,
        provider=connection.provider,
        trigger=SyncRun.Trigger.SCHEDULE,
        started_at=now,
        outcome=SyncRun.Outcome.SUCCESS,
    )
    event = WebhookEvent.objects.create(
        provider=connection.provider,
        dedup_key="staff-permissions-1",
        event_type="SYNC_UPDATES_AVAILABLE",
        received_at=now,
        verified=True,
        status=WebhookEvent.Status.PROCESSED,
        attempts=1,
        user=connection.user,
        connection=connection,
        payload={"item_id": "item-the-staff-must-not-see"},
    )
    item = QuarantinedItem.objects.create(
        user=connection.user,
        connection=connection,
        provider=connection.provider,
        stream="hours",
        kind="app_usage",
        reason="missing field: date",
    )
    return {
        "sources_userdatasource": connection,
        "ingestion_syncrun": run,
        "ingestion_webhookevent": event,
        "ingestion_quarantineditem": item,
    }


def changelist(name: str) -> str:
    return reverse(f"admin:{name}_changelist")


def change(name: str, pk) -> str:
    return reverse(f"admin:{name}_change", args=[pk])


# --- (a) a view-only staff member ------------------------------------------------------------


@pytest.fixture
def viewer(client):
    return log_in(client, StaffFactory(permissions=STAFF_VIEW_PERMISSIONS))


def test_view_only_staff_see_every_list_detail_and_the_dashboard(viewer, admin_rows):
    for name, row in admin_rows.items():
        listed = viewer.get(changelist(name))
        assert listed.status_code == 200, name
        assert [r.pk for r in listed.context["cl"].result_list] == [row.pk], name
        # No action is offered: Django leaves the whole actions bar out.
        assert listed.context["action_form"] is None, name
        assert 'name="action"' not in listed.content.decode(), name
        detail = viewer.get(change(name, row.pk))
        assert detail.status_code == 200, name
    dashboard = viewer.get(reverse("sync_dashboard"))
    assert dashboard.status_code == 200 and "Connections by status" in dashboard.content.decode()
    index = viewer.get(reverse("admin:index")).content.decode()
    assert reverse("sync_dashboard") in index and reverse("privacy_search") in index


def test_view_only_staff_cannot_run_an_action_by_posting_it(viewer, connection, admin_rows):
    url = changelist("sources_userdatasource")
    for action in CONNECTION_ACTIONS:
        viewer.post(url, {"action": action, "_selected_action": [str(connection.pk)]})
    after = UserDataSource.objects.get(pk=connection.pk)
    assert (after.status, after.cursors, after.next_sync_at) == (
        Status.ACTIVE,
        {"hours": "2026-01-01"},
        None,
    )
    event = admin_rows["ingestion_webhookevent"]
    viewer.post(
        changelist("ingestion_webhookevent"),
        {"action": "replay", "_selected_action": [str(event.pk)], "reason": "curious"},
    )
    replayed = WebhookEvent.objects.get(pk=event.pk)
    assert (replayed.status, replayed.attempts) == (WebhookEvent.Status.PROCESSED, 1)
    assert not AccessLedgerEntry.objects.exists()


def test_view_only_staff_get_a_read_only_connection_page(viewer, connection):
    url = change("sources_userdatasource", connection.pk)
    page = viewer.get(url).content.decode()
    for field in ("sync_interval", "next_sync_at", "notice", "status", "lease_owner"):
        assert f'name="{field}"' not in page, field
    assert 'name="_save"' not in page
    refused = viewer.post(url, {"sync_interval": "60", "notice": "changed", "_save": "Save"})
    assert refused.status_code == 403
    assert UserDataSource.objects.get(pk=connection.pk).sync_interval == 3600


def test_view_only_staff_see_the_privacy_page_but_cannot_export_or_erase(viewer, connection):
    person = connection.user
    url = reverse("person_privacy", args=[person.pk])
    found = viewer.get(reverse("privacy_search"), {"q": person.email})
    assert found.status_code == 200 and url in found.content.decode()
    page = viewer.get(url)
    text = page.content.decode()
    assert page.status_code == 200 and connection.provider in text
    assert "Export everything" not in text and 'value="erase"' not in text
    assert viewer.post(url, {"action": "export", "reason": "asked"}).status_code == 403
    erase = {"action": "erase", "confirm": person.username, "password": PASSWORD}
    assert viewer.post(url, erase).status_code == 403
    assert get_user_model().objects.filter(pk=person.pk).exists()
    assert not AccessLedgerEntry.objects.exists()


def test_staff_without_the_payload_permission_cannot_reveal_a_payload(viewer, admin_rows):
    event = admin_rows["ingestion_webhookevent"]
    page = viewer.get(change("ingestion_webhookevent", event.pk)).content.decode()
    assert "Show payload" not in page and "item-the-staff-must-not-see" not in page
    reveal = reverse("admin:ingestion_webhookevent_payload", args=[event.pk])
    assert viewer.post(reveal, {"reason": "curious"}).status_code == 403
    assert not AccessLedgerEntry.objects.exists()


def test_staff_see_the_actions_their_permissions_allow(client, connection, admin_rows):
    syncer = StaffFactory(
        permissions=("sources.view_userdatasource", "sources.sync_userdatasource")
    )
    log_in(client, syncer)
    listed = client.get(changelist("sources_userdatasource"))
    offered = {name for name, _ in listed.context["action_form"].fields["action"].choices}
    assert offered == {"", "sync_now", "pause", "resume", "full_resync"}
    client.post(
        changelist("sources_userdatasource"),
        {"action": "disconnect_keep_data", "_selected_action": [str(connection.pk)]},
    )
    assert UserDataSource.objects.get(pk=connection.pk).status == Status.ACTIVE
    client.post(
        changelist("sources_userdatasource"),
        {"action": "pause", "_selected_action": [str(connection.pk)]},
    )
    assert UserDataSource.objects.get(pk=connection.pk).status == Status.PAUSED


# --- (b) a staff member without permissions --------------------------------------------------


def test_staff_without_permissions_are_refused_everywhere(client, admin_rows):
    log_in(client, StaffFactory())
    person = admin_rows["sources_userdatasource"].user
    for name, row in admin_rows.items():
        assert client.get(changelist(name)).status_code == 403, name
        assert client.get(change(name, row.pk)).status_code == 403, name
    assert client.get(reverse("sync_dashboard")).status_code == 403
    assert client.get(reverse("privacy_search"), {"q": person.email}).status_code == 403
    url = reverse("person_privacy", args=[person.pk])
    assert client.get(url).status_code == 403
    assert client.post(url, {"action": "export", "reason": "asked"}).status_code == 403
    index = client.get(reverse("admin:index")).content.decode()
    assert reverse("sync_dashboard") not in index and reverse("privacy_search") not in index


# --- (c) a staff member who may export and erase ---------------------------------------------


@pytest.fixture
def exporter(client):
    return log_in(client, StaffFactory(permissions=PRIVACY_EXPORTER))


def test_staff_with_the_export_permission_export_and_the_ledger_says_so(exporter, connection):
    person = connection.user
    url = reverse("person_privacy", args=[person.pk])
    page = exporter.get(url).content.decode()
    assert "Export everything" in page and 'value="erase"' in page
    response = exporter.post(url, {"action": "export", "reason": "data request #9"})
    assert response.status_code == 200 and response.streaming
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    assert "connections.jsonl" in archive.namelist()
    entry = AccessLedgerEntry.objects.get(subject=person)
    assert (entry.action, entry.reason, entry.actor_is_staff) == ("export", "data request #9", True)


def test_staff_erase_an_ordinary_person_only_with_their_own_password(exporter, connection):
    person = connection.user
    url = reverse("person_privacy", args=[person.pk])
    wrong = exporter.post(url, {"action": "erase", "confirm": person.username, "password": "no"})
    assert escape(ERASE_REAUTH_FAILED) in wrong.content.decode()
    missing = exporter.post(url, {"action": "erase", "confirm": person.username})
    assert escape(ERASE_REAUTH_FAILED) in missing.content.decode()
    mistyped = exporter.post(url, {"action": "erase", "confirm": "someone", "password": PASSWORD})
    assert escape(ERASE_CONFIRM_WRONG) in mistyped.content.decode()
    assert get_user_model().objects.filter(pk=person.pk).exists()
    done = exporter.post(url, {"action": "erase", "confirm": person.username, "password": PASSWORD})
    assert done.status_code == 302
    assert not get_user_model().objects.filter(pk=person.pk).exists()
    assert not UserDataSource.objects.filter(pk=connection.pk).exists()


def test_a_staff_members_wrong_passwords_are_limited_like_their_login(
    exporter, connection, settings
):
    """The password asked before an erasure is what stands between a stolen staff session and
    erasing people: guessing it here is counted with the staff member's login guesses."""
    settings.SIBLING_LOGIN_RATE_USERNAME = "2/h"
    person = connection.user
    url = reverse("person_privacy", args=[person.pk])
    for _ in range(2):
        wrong = exporter.post(
            url, {"action": "erase", "confirm": person.username, "password": "no"}
        )
        assert escape(ERASE_REAUTH_FAILED) in wrong.content.decode()
    # The budget is spent: even the right password waits, so guessing gains nothing.
    limited = exporter.post(
        url, {"action": "erase", "confirm": person.username, "password": PASSWORD}
    )
    assert limited.status_code == 429 and int(limited["Retry-After"]) > 0
    assert escape(ERASE_TOO_MANY_WRONG_PASSWORDS) in limited.content.decode()
    assert get_user_model().objects.filter(pk=person.pk).exists()


@pytest.mark.parametrize("kind", ["staff", "superuser"])
def test_only_a_superuser_erases_a_staff_account(exporter, kind):
    target = UserFactory(is_staff=True, is_superuser=kind == "superuser")
    url = reverse("person_privacy", args=[target.pk])
    page = exporter.get(url).content.decode()
    assert escape(ERASE_STAFF_REFUSED) in page and 'value="erase"' not in page
    erase = {"action": "erase", "confirm": target.username, "password": PASSWORD}
    assert exporter.post(url, erase).status_code == 403
    assert get_user_model().objects.filter(pk=target.pk).exists()


# --- (d) a superuser --------------------------------------------------------------------------


@pytest.fixture
def superuser(client):
    return log_in(client, UserFactory(is_staff=True, is_superuser=True))


def test_a_superuser_has_every_action_and_erases_a_staff_account(superuser, admin_rows):
    listed = superuser.get(changelist("sources_userdatasource"))
    offered = {name for name, _ in listed.context["action_form"].fields["action"].choices}
    assert set(CONNECTION_ACTIONS) <= offered
    events = superuser.get(changelist("ingestion_webhookevent"))
    assert "replay" in {name for name, _ in events.context["action_form"].fields["action"].choices}
    assert superuser.get(reverse("sync_dashboard")).status_code == 200

    target = StaffFactory(permissions=STAFF_VIEW_PERMISSIONS)
    url = reverse("person_privacy", args=[target.pk])
    erase = {"action": "erase", "confirm": target.username, "password": PASSWORD}
    assert superuser.post(url, erase).status_code == 302
    assert not get_user_model().objects.filter(pk=target.pk).exists()


def test_a_payload_is_revealed_by_a_posted_reason_never_one_in_the_url(superuser, admin_rows):
    event = admin_rows["ingestion_webhookevent"]
    secret = "item-the-staff-must-not-see"
    detail = change("ingestion_webhookevent", event.pk)
    page = superuser.get(detail, {"reason": "in the url"}).content.decode()
    assert secret not in page and "Show payload" in page
    assert not AccessLedgerEntry.objects.exists()

    reveal = reverse("admin:ingestion_webhookevent_payload", args=[event.pk])
    assert f'action="{reveal}"' in page and 'method="post"' in page
    assert superuser.get(reveal, {"reason": "in the url"}).status_code == 405
    no_reason = superuser.post(reveal, {"reason": " "}, follow=True)
    assert secret not in no_reason.content.decode()
    assert not AccessLedgerEntry.objects.exists()

    shown = superuser.post(reveal, {"reason": "checking the item id"})
    assert shown.status_code == 200 and secret in shown.content.decode()
    assert "no-store" in shown["Cache-Control"]
    entry = AccessLedgerEntry.objects.get(subject=event.user)
    assert (entry.action, entry.reason) == ("view", "checking the item id")


def test_revealing_a_payload_needs_the_csrf_token(admin_rows):
    browser = log_in(
        Client(enforce_csrf_checks=True), UserFactory(is_staff=True, is_superuser=True)
    )
    event = admin_rows["ingestion_webhookevent"]
    reveal = reverse("admin:ingestion_webhookevent_payload", args=[event.pk])
    assert browser.post(reveal, {"reason": "forged form"}).status_code == 403
    assert not AccessLedgerEntry.objects.exists()
