"""Staff see connections, never their secrets, and act on them."""

import pytest
from django.urls import reverse

from sources.models import UserDataSource
from tests.factories import StaffFactory, UserDataSourceFactory, UserFactory
from tests.sources.providers.kit import provider_for

pytestmark = pytest.mark.django_db
Status = UserDataSource.Status
SECRET = "sandbox-key-that-must-never-show"


@pytest.fixture
def staff(client):
    admin = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(admin, backend="django.contrib.auth.backends.ModelBackend")
    return client


def test_list_has_badges_filters_and_search_by_email(staff):
    mine = UserDataSourceFactory(user=UserFactory(email="findme@example.com"))
    other = provider_for(auth_mode="oauth2").id  # not the factory's default provider
    UserDataSourceFactory(provider=other, status=Status.REAUTH_REQUIRED)
    url = reverse("admin:sources_userdatasource_changelist")
    page = staff.get(url).content.decode()
    assert "Sign-in needed" in page and "Active" in page
    found = staff.get(url, {"q": "findme@"})
    assert [c.pk for c in found.context["cl"].result_list] == [mine.pk]
    filtered = staff.get(url, {"status__exact": "reauth_required", "provider__exact": other})
    assert [c.status for c in filtered.context["cl"].result_list] == [Status.REAUTH_REQUIRED]


def test_detail_page_shows_no_secret(staff):
    connection = UserDataSourceFactory(credentials={"api_key": SECRET})
    page = staff.get(reverse("admin:sources_userdatasource_change", args=[connection.pk]))
    body = page.content.decode()
    assert page.status_code == 200
    assert "stored, encrypted" in body
    assert SECRET not in body


@pytest.mark.parametrize(
    ("action", "before", "after"),
    [
        ("pause", Status.ACTIVE, Status.PAUSED),
        ("resume", Status.PAUSED, Status.ACTIVE),
        ("sync_now", Status.ACTIVE, Status.ACTIVE),
        ("full_resync", Status.ACTIVE, Status.ACTIVE),
    ],
)
def test_actions(staff, action, before, after):
    connection = UserDataSourceFactory(status=before, cursors={"hours": "2026-01-01"})
    staff.post(
        reverse("admin:sources_userdatasource_changelist"),
        {"action": action, "_selected_action": [str(connection.pk)]},
    )
    connection.refresh_from_db()
    assert connection.status == after
    if action == "full_resync":
        assert connection.cursors == {} and connection.backfill_progress == 0.0
    if action in ("sync_now", "resume", "full_resync"):
        assert connection.next_sync_at is not None


def test_disconnect_action_revokes_and_keeps_the_connection_row(staff):
    connection = UserDataSourceFactory()
    staff.post(
        reverse("admin:sources_userdatasource_changelist"),
        {"action": "disconnect_keep_data", "_selected_action": [str(connection.pk)]},
    )
    connection.refresh_from_db()
    assert connection.status == Status.DISCONNECTED and connection.credentials is None


def test_staff_who_may_change_edit_only_the_schedule_and_notice(client):
    editor = StaffFactory(
        permissions=("sources.view_userdatasource", "sources.change_userdatasource")
    )
    client.force_login(editor, backend="django.contrib.auth.backends.ModelBackend")
    connection = UserDataSourceFactory()
    url = reverse("admin:sources_userdatasource_change", args=[connection.pk])
    page = client.get(url).content.decode()
    for editable in ("sync_interval", "next_sync_at_0", "notice"):
        assert f'name="{editable}"' in page, editable
    # State changes go through the actions (and their services), never a hand-edited field.
    for fixed in ("status", "lease_owner", "lease_expires_at_0", "external_lookup", "cursors"):
        assert f'name="{fixed}"' not in page, fixed
    client.post(
        url,
        {
            "sync_interval": "600",
            "next_sync_at_0": "",
            "next_sync_at_1": "",
            "notice": "",
            "status": "disconnected",
            "runs-TOTAL_FORMS": "0",
            "runs-INITIAL_FORMS": "0",
            "_save": "Save",
        },
    )
    connection.refresh_from_db()
    assert (connection.sync_interval, connection.status) == (600, Status.ACTIVE)
