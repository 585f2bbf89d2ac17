"""connection_changed: sent once for each change a person or another module must hear of, after
it is stored, whoever caused it (a sync, a provider's notification, the person)."""

from collections.abc import Iterator

import pytest
from django.utils import timezone

from ingestion.notifications import connection_notice, connection_reauth_required
from sibling.people import person_of
from sources.models import UserDataSource
from sources.services import connection_disconnect
from sources.signals import (
    DISCONNECTED,
    EXPIRING,
    REAUTH_REQUIRED,
    STOPPED,
    connection_changed,
    connection_changed_send,
)
from tests.factories import UserFactory
from tests.ingestion.conftest import fresh, sync
from tests.sources.providers.kit import sandbox_fault

pytestmark = pytest.mark.django_db(transaction=True)
Status = UserDataSource.Status


@pytest.fixture
def heard() -> Iterator[list[tuple[object, str, str]]]:
    changes: list[tuple[object, str, str]] = []

    def receiver(sender: object, connection: UserDataSource, change: str, **kwargs: object):
        # What receivers rely on: the change is stored before they hear of it.
        stored = UserDataSource.objects.filter(pk=connection.pk).values_list("status", flat=True)
        changes.append((connection.pk, change, stored.first() or "deleted"))

    connection_changed.connect(receiver, dispatch_uid="test-heard")
    yield changes
    connection_changed.disconnect(dispatch_uid="test-heard")


def test_a_refused_grant_is_heard_once_with_the_status_stored(oauth_connection, heard):
    sandbox_fault(oauth_connection, "revoke")
    sandbox_fault(oauth_connection, "expire_access_token")
    sync(oauth_connection)
    # A provider's notification saying the same afterwards is no new incident.
    connection_reauth_required(fresh(oauth_connection))
    assert heard == [(oauth_connection.pk, REAUTH_REQUIRED, Status.REAUTH_REQUIRED)]


def test_repeated_failures_are_heard_when_they_stop_the_connection(key_connection, heard, settings):
    settings.SIBLING_SYNC_MAX_FAILURES = 2
    for _ in range(3):
        sandbox_fault(key_connection, "server_error", count=50)
        UserDataSource.objects.filter(pk=key_connection.pk).update(next_sync_at=timezone.now())
        sync(key_connection)
    assert heard == [(key_connection.pk, STOPPED, Status.ERROR)]


def test_a_notice_is_heard_only_as_an_incident_and_once_per_text(key_connection, heard):
    connection_notice(key_connection, "Something to know.")
    assert heard == []
    for _ in range(2):
        connection_notice(key_connection, "Access ends soon.", change=EXPIRING)
    assert heard == [(key_connection.pk, EXPIRING, Status.ACTIVE)]
    assert fresh(key_connection).notice == "Access ends soon."


@pytest.mark.parametrize("delete_data", [False, True])
def test_a_disconnect_is_heard_with_its_connection_id(key_connection, heard, delete_data):
    connection_disconnect(connection=fresh(key_connection), delete_data=delete_data)
    expected = "deleted" if delete_data else Status.DISCONNECTED
    assert heard == [(key_connection.pk, DISCONNECTED, expected)]


def test_a_failing_receiver_neither_raises_nor_stops_the_others(key_connection, heard, caplog):
    def broken(**kwargs: object) -> None:
        raise RuntimeError("boom")

    connection_changed.connect(broken, dispatch_uid="test-broken")
    try:
        connection_changed_send(key_connection, EXPIRING)
    finally:
        connection_changed.disconnect(dispatch_uid="test-broken")
    assert heard == [(key_connection.pk, EXPIRING, Status.ACTIVE)]
    assert "RuntimeError" in caplog.text


def test_an_unknown_change_is_a_programming_error(key_connection):
    with pytest.raises(ValueError, match="unknown connection change"):
        connection_changed_send(key_connection, "exploded")


def test_a_person_row_is_made_once_with_a_random_public_id():
    user = UserFactory()
    first = person_of(user)
    assert person_of(user.pk).pk == first.pk
    assert first.time_zone == "UTC" and first.alert_emails is True
    assert str(user.pk) not in first.public_id and len(first.public_id) == 36
    assert person_of(UserFactory()).public_id != first.public_id


@pytest.mark.parametrize("max_failures", [None, 1])
def test_a_sync_failing_after_the_person_disconnected_is_no_incident(
    oauth_connection, heard, monkeypatch, settings, max_failures
):
    # The person disconnects while a sync runs: the grant is revoked, so the sync's next request
    # is refused (or fails). The connection stays disconnected and nobody is asked to sign in
    # again or told that syncing stopped.
    from ingestion.errors import ReauthRequired

    if max_failures:
        settings.SIBLING_SYNC_MAX_FAILURES = max_failures
    provider = oauth_connection.provider_class

    def refused(stream: str, payload: object) -> object:
        connection_disconnect(connection=fresh(oauth_connection), delete_data=False)
        raise RuntimeError("lost") if max_failures else ReauthRequired("the grant was revoked")

    monkeypatch.setattr(provider, "processor", classmethod(lambda cls: refused))
    run = sync(oauth_connection)
    assert run.error_class == ("RuntimeError" if max_failures else "ReauthRequired")
    assert fresh(oauth_connection).status == Status.DISCONNECTED
    assert heard == [(oauth_connection.pk, DISCONNECTED, Status.DISCONNECTED)]
