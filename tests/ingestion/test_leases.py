"""One sync of a connection at a time, whichever path starts it: the lease is taken through one
claim, renewed while pages are stored, released only by its owner; a notification's window that
finds the connection busy waits for the holder and is fetched after it, never beside it (the
window tests are with the provider whose notifications name windows, in its folder)."""

from datetime import date, timedelta

import pytest
from django.utils import timezone

from ingestion import runner
from ingestion.models import SyncRun
from ingestion.notifications import connection_sync_request, window_bounds
from ingestion.runner import connection_sync
from sources.models import UserDataSource
from tests.ingestion.conftest import NO_WAIT, fresh, hold_lease
from tests.sources.providers.kit import sandbox_connection

pytestmark = pytest.mark.django_db(transaction=True)
Outcome = SyncRun.Outcome


@pytest.fixture
def paged_connection(sandbox, person):
    """A connection whose backfill is many pages: a behavioral OAuth2 source, a page a day."""
    return sandbox_connection(person, auth_mode="oauth2", category="behavioral")


# --- The runner and the lease -------------------------------------------------------------------


def test_the_runner_never_runs_beside_the_holder_nor_clears_its_lease(key_connection):
    owner, holder_run = hold_lease(key_connection)
    assert connection_sync(key_connection.pk, policy=NO_WAIT) is None
    stale = connection_sync(key_connection.pk, lease_owner="an-old-token", policy=NO_WAIT)
    assert stale is None
    connection = fresh(key_connection)
    assert connection.lease_owner == owner and connection.lease_expires_at > timezone.now()
    holder_run.refresh_from_db()
    assert holder_run.outcome == Outcome.RUNNING
    assert SyncRun.objects.filter(connection=key_connection).count() == 1


def test_a_sync_whose_lease_was_taken_over_stops_and_leaves_the_new_lease_alone(
    key_connection, monkeypatch
):
    monkeypatch.setattr(runner, "LEASE_RENEW_S", 0)  # renew after every page
    taken_until = timezone.now() + timedelta(minutes=30)

    def taken_over(run: SyncRun, stream: str, progress: float | None) -> None:
        # This sync's lease expired and another sync claimed the connection.
        UserDataSource.objects.filter(pk=key_connection.pk).update(
            lease_owner="the-next-holder", lease_expires_at=taken_until
        )

    scheduled = fresh(key_connection).next_sync_at
    run = connection_sync(key_connection.pk, policy=NO_WAIT, on_page=taken_over)
    assert run.outcome == Outcome.FAILED and run.error_class == "LeaseLost"
    assert run.pages == 1  # it stopped at the next page
    connection = fresh(key_connection)
    assert connection.lease_owner == "the-next-holder"
    assert connection.lease_expires_at == taken_until.replace(
        microsecond=taken_until.microsecond // 1000 * 1000
    )
    # The connection's state is the new holder's to write: no failure counted, no reschedule.
    assert connection.consecutive_failures == 0 and connection.next_sync_at == scheduled


def test_a_running_run_is_interrupted_only_once_its_lease_has_expired(key_connection):
    _, earlier = hold_lease(key_connection)
    assert connection_sync(key_connection.pk, policy=NO_WAIT) is None
    earlier.refresh_from_db()
    assert earlier.outcome == Outcome.RUNNING  # its worker may well be alive
    UserDataSource.objects.filter(pk=key_connection.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)  # its worker was killed
    )
    run = connection_sync(key_connection.pk, policy=NO_WAIT)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    earlier.refresh_from_db()
    assert earlier.outcome == Outcome.FAILED and earlier.error_class == "Interrupted"
    assert fresh(key_connection).lease_owner == ""


def test_a_long_sync_renews_its_lease_as_pages_are_stored(paged_connection, monkeypatch):
    monkeypatch.setattr(runner, "LEASE_RENEW_S", 0)
    observed = []

    def page_stored(run: SyncRun, stream: str, progress: float | None) -> None:
        connection = fresh(paged_connection)
        observed.append((connection.lease_owner, connection.lease_expires_at))
        # As if the lease were about to run out: the next page must extend it.
        UserDataSource.objects.filter(pk=paged_connection.pk).update(
            lease_expires_at=timezone.now() + timedelta(seconds=1)
        )

    run = connection_sync(paged_connection.pk, policy=NO_WAIT, on_page=page_stored)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    assert len(observed) >= 3
    owners = {owner for owner, _ in observed}
    assert len(owners) == 1 and "" not in owners
    for _, until in observed[1:]:
        assert until > timezone.now() + timedelta(minutes=5)  # renewed to a whole lease
    assert fresh(paged_connection).lease_owner == ""


def test_a_sync_requested_while_another_runs_follows_it(key_connection, settings):
    settings.SIBLING_SYNC_ON_DUE = True
    requested = []

    def provider_notifies(run: SyncRun, stream: str, progress: float | None) -> None:
        if not requested:
            requested.append(connection_sync_request(fresh(key_connection)))

    first = connection_sync(key_connection.pk, policy=NO_WAIT, on_page=provider_notifies)
    assert requested == [False]  # busy: not started beside the running sync
    runs = list(SyncRun.objects.filter(connection=key_connection).order_by("started_at"))
    assert [r.outcome for r in runs] == [Outcome.SUCCESS, Outcome.SUCCESS]
    assert runs[0].pk == first.pk and runs[1].started_at >= runs[0].ended_at
    assert fresh(key_connection).next_sync_at > timezone.now()


# --- Window bounds ------------------------------------------------------------------------------


def test_window_bounds_clamp_to_the_backfill_horizon_and_today(settings):
    settings.SIBLING_BACKFILL_DAYS = 30
    today = timezone.now().date()
    horizon, tomorrow = today - timedelta(days=30), today + timedelta(days=1)
    assert window_bounds(today - timedelta(days=3), today) == (today - timedelta(days=3), today)
    assert window_bounds(date(2001, 1, 1), today) == (horizon, today)
    assert window_bounds(today, date(2999, 1, 1)) == (today, tomorrow)
    assert window_bounds(date(2001, 1, 1), date(2999, 1, 1)) == (horizon, tomorrow)
    assert window_bounds(date(2001, 1, 1), date(2001, 1, 2)) is None
    assert window_bounds(today + timedelta(days=2), today + timedelta(days=9)) is None


def test_a_reconnect_while_a_sync_runs_leaves_its_lease_and_cursors(key_connection, monkeypatch):
    from ingestion import fence
    from sources.services import connection_upsert

    key = key_connection.sandbox_account
    holder = {}
    ensure = fence.data_key_ensure

    def a_sync_starts_meanwhile(user_id):
        # Between the reconnect's read of the connection and its write, a sync takes the lease
        # and stores a cursor.
        holder["owner"], _ = hold_lease(key_connection)
        UserDataSource.objects.filter(pk=key_connection.pk).update(cursors={"daily": "2026-01-05"})
        return ensure(user_id)

    monkeypatch.setattr(fence, "data_key_ensure", a_sync_starts_meanwhile)
    connection_upsert(
        user=key_connection.user,
        provider=key_connection.provider_class,
        external_account_id=key_connection.provider_class.external_account_id_for_key(key),
        credentials={"api_key": key},
    )
    connection = fresh(key_connection)
    assert connection.lease_owner == holder["owner"]
    assert connection.cursors == {"daily": "2026-01-05"}
