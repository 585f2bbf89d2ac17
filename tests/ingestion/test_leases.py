"""One sync of a connection at a time, whichever path starts it: the lease is taken through one
claim, renewed while pages are stored, released only by its owner; a notification's window that
finds the connection busy waits for the holder and is fetched after it, never beside it."""

import logging
from datetime import date, timedelta

import pytest
from django.utils import timezone

from ingestion import runner
from ingestion.fence import erasure_subject
from ingestion.models import ErasureRecord, SyncRun, WebhookEvent
from ingestion.notifications import connection_sync_request, connection_window_fetch, window_bounds
from ingestion.runner import connection_sync
from ingestion.scheduler import dispatch_due_syncs
from ingestion.storage import records_collection
from sources.models import UserDataSource
from sources.providers.fitbit import sandbox as sandbox_hooks
from tests.ingestion.conftest import NO_WAIT, fresh, hold_lease

pytestmark = pytest.mark.django_db(transaction=True)
Outcome = SyncRun.Outcome
HEALTH_URL = "/webhooks/fitbit/"


def steps_day(connection, day: date) -> dict | None:
    return records_collection("behavioral_data").find_one(
        {"connection": connection.pk, "kind": "activity_day", "external_id": day.isoformat()}
    )


def notify(sandbox, settings, connection, day: date) -> None:
    """The Google Health API tells Sibling that this day's steps changed (signed, over HTTP)."""
    body = sandbox_hooks.health_notification_body(
        connection.external_account_id, "steps", [(day.isoformat(), day.isoformat())]
    )
    statuses = sandbox_hooks.health_webhook_send(
        f"{sandbox.url}{HEALTH_URL}", settings.FITBIT_WEBHOOK_SECRET, body
    )
    assert statuses == [204]


# --- A window fetch while a sync holds the lease ------------------------------------------------


def test_a_window_fetch_while_a_sync_runs_waits_for_it_and_both_sets_of_records_arrive(
    fitbit_connection, sandbox, settings
):
    settings.SIBLING_PUBLIC_URL = sandbox.url
    settings.FITBIT_WEBHOOK_PUBLIC_KEY = sandbox_hooks.health_public_key_pem()
    assert connection_sync(fitbit_connection.pk, policy=NO_WAIT).outcome == Outcome.SUCCESS
    # Two days an incremental sync does not fetch again (it refetches only the last two).
    today = timezone.now().date()
    older, newer = today - timedelta(days=8), today - timedelta(days=6)
    for day in (older, newer):
        records_collection("behavioral_data").delete_one(
            {"connection": fitbit_connection.pk, "external_id": day.isoformat()}
        )
    UserDataSource.objects.filter(pk=fitbit_connection.pk).update(next_sync_at=timezone.now())
    assert dispatch_due_syncs(enqueue=False) == [str(fitbit_connection.pk)]
    owner = fresh(fitbit_connection).lease_owner
    seen = []

    def during_the_sync(run: SyncRun, stream: str, progress: float | None) -> None:
        if seen:
            return
        # Two notifications arrive while this sync holds the lease; each starts a window fetch.
        notify(sandbox, settings, fitbit_connection, newer)
        notify(sandbox, settings, fitbit_connection, older)
        connection = fresh(fitbit_connection)
        seen.append(
            {
                "holder": SyncRun.objects.get(pk=run.pk).outcome,
                "lease_owner": connection.lease_owner,
                "pending": connection.pending_windows,
                "window_runs": SyncRun.objects.filter(trigger=SyncRun.Trigger.WEBHOOK).count(),
            }
        )

    holder = connection_sync(
        fitbit_connection.pk, lease_owner=owner, policy=NO_WAIT, on_page=during_the_sync
    )

    # While the holder ran: it stayed "running" and kept its lease; the windows waited, merged.
    assert seen == [
        {
            "holder": Outcome.RUNNING,
            "lease_owner": owner,
            "pending": {
                "steps": {"first": older.isoformat(), "last": newer.isoformat(), "asked": 2}
            },
            "window_runs": 0,
        }
    ]
    events = WebhookEvent.objects.filter(provider="fitbit")
    assert [e.status for e in events] == [WebhookEvent.Status.PROCESSED] * 2
    # Neither run harmed the other: the holder finished as itself, then the window was fetched.
    holder.refresh_from_db()
    assert holder.outcome == Outcome.SUCCESS and holder.error_class == ""
    assert holder.trigger == SyncRun.Trigger.SCHEDULE
    window = SyncRun.objects.get(connection=fitbit_connection, trigger=SyncRun.Trigger.WEBHOOK)
    assert window.outcome == Outcome.SUCCESS, window.error_message
    assert window.started_at >= holder.ended_at
    assert not SyncRun.objects.filter(error_class="Interrupted").exists()
    assert steps_day(fitbit_connection, older) and steps_day(fitbit_connection, newer)
    connection = fresh(fitbit_connection)
    assert connection.pending_windows == {}
    assert connection.lease_owner == "" and connection.lease_expires_at is None


def test_a_window_queued_behind_a_killed_sync_is_fetched_after_the_next_sync(
    fitbit_connection, settings
):
    _, dead_run = hold_lease(fitbit_connection)
    day = timezone.now().date() - timedelta(days=3)
    assert connection_window_fetch(fitbit_connection, stream="steps", first=day, last=day)
    assert fresh(fitbit_connection).pending_windows  # queued, not dropped
    assert not steps_day(fitbit_connection, day)
    # The holder's worker was killed: its lease runs out, and the next sync takes over.
    UserDataSource.objects.filter(pk=fitbit_connection.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert connection_sync(fitbit_connection.pk, policy=NO_WAIT).outcome == Outcome.SUCCESS
    dead_run.refresh_from_db()
    assert dead_run.error_class == "Interrupted"
    assert SyncRun.objects.get(trigger=SyncRun.Trigger.WEBHOOK).outcome == Outcome.SUCCESS
    assert fresh(fitbit_connection).pending_windows == {}


def test_windows_wait_behind_a_sync_that_did_not_succeed(fitbit_connection):
    """A sync stopped by the person's erasure (or failed, or deferred by the provider) starts no
    window fetch as it ends: the windows stay queued for a sync that succeeds."""
    owner, _ = hold_lease(fitbit_connection)
    day = timezone.now().date() - timedelta(days=3)
    assert connection_window_fetch(fitbit_connection, stream="steps", first=day, last=day)

    def erasure_begins(run: SyncRun, stream: str, progress: float | None) -> None:
        ErasureRecord.objects.get_or_create(
            subject=erasure_subject(fitbit_connection.user_id),
            defaults={"erased_at": timezone.now(), "completed": False},
        )

    run = connection_sync(
        fitbit_connection.pk, lease_owner=owner, policy=NO_WAIT, on_page=erasure_begins
    )
    assert run.error_class == "PersonErased"
    assert not SyncRun.objects.filter(trigger=SyncRun.Trigger.WEBHOOK).exists()
    assert fresh(fitbit_connection).pending_windows  # still queued, not dropped


def test_a_notification_for_the_same_days_during_their_fetch_is_fetched_again(fitbit_connection):
    day = timezone.now().date() - timedelta(days=3)
    hold_lease(fitbit_connection)  # so the first notification's window waits, queued
    assert connection_window_fetch(fitbit_connection, stream="steps", first=day, last=day)
    UserDataSource.objects.filter(pk=fitbit_connection.pk).update(
        lease_owner="", lease_expires_at=None
    )
    notified = []

    def the_day_changes_again(run: SyncRun, stream: str, progress: float | None) -> None:
        # The provider says this day changed again, after its page was read: the fetch
        # running now may not have seen that change, so the window must not leave the queue.
        if not notified:
            notified.append(
                connection_window_fetch(fitbit_connection, stream="steps", first=day, last=day)
            )

    first = connection_sync(
        fitbit_connection.pk,
        trigger=SyncRun.Trigger.WEBHOOK,  # as the window task runs it
        policy=NO_WAIT,
        windows=True,
        on_page=the_day_changes_again,
    )
    assert first.outcome == Outcome.SUCCESS and notified == [True]
    windows = SyncRun.objects.filter(connection=fitbit_connection, trigger=SyncRun.Trigger.WEBHOOK)
    assert [r.outcome for r in windows.order_by("started_at")] == [Outcome.SUCCESS] * 2
    assert fresh(fitbit_connection).pending_windows == {}


# --- The runner and the lease -------------------------------------------------------------------


def test_the_runner_never_runs_beside_the_holder_nor_clears_its_lease(rescuetime_connection):
    owner, holder_run = hold_lease(rescuetime_connection)
    assert connection_sync(rescuetime_connection.pk, policy=NO_WAIT) is None
    stale = connection_sync(rescuetime_connection.pk, lease_owner="an-old-token", policy=NO_WAIT)
    assert stale is None
    connection = fresh(rescuetime_connection)
    assert connection.lease_owner == owner and connection.lease_expires_at > timezone.now()
    holder_run.refresh_from_db()
    assert holder_run.outcome == Outcome.RUNNING
    assert SyncRun.objects.filter(connection=rescuetime_connection).count() == 1


def test_a_sync_whose_lease_was_taken_over_stops_and_leaves_the_new_lease_alone(
    fitbit_connection, monkeypatch
):
    monkeypatch.setattr(runner, "LEASE_RENEW_S", 0)  # renew after every page
    taken_until = timezone.now() + timedelta(minutes=30)

    def taken_over(run: SyncRun, stream: str, progress: float | None) -> None:
        # This sync's lease expired and another sync claimed the connection.
        UserDataSource.objects.filter(pk=fitbit_connection.pk).update(
            lease_owner="the-next-holder", lease_expires_at=taken_until
        )

    scheduled = fresh(fitbit_connection).next_sync_at
    run = connection_sync(fitbit_connection.pk, policy=NO_WAIT, on_page=taken_over)
    assert run.outcome == Outcome.FAILED and run.error_class == "LeaseLost"
    assert run.pages == 1  # it stopped at the next page
    connection = fresh(fitbit_connection)
    assert connection.lease_owner == "the-next-holder"
    assert connection.lease_expires_at == taken_until.replace(
        microsecond=taken_until.microsecond // 1000 * 1000
    )
    # The connection's state is the new holder's to write: no failure counted, no reschedule.
    assert connection.consecutive_failures == 0 and connection.next_sync_at == scheduled


def test_a_running_run_is_interrupted_only_once_its_lease_has_expired(rescuetime_connection):
    _, earlier = hold_lease(rescuetime_connection)
    assert connection_sync(rescuetime_connection.pk, policy=NO_WAIT) is None
    earlier.refresh_from_db()
    assert earlier.outcome == Outcome.RUNNING  # its worker may well be alive
    UserDataSource.objects.filter(pk=rescuetime_connection.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)  # its worker was killed
    )
    run = connection_sync(rescuetime_connection.pk, policy=NO_WAIT)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    earlier.refresh_from_db()
    assert earlier.outcome == Outcome.FAILED and earlier.error_class == "Interrupted"
    assert fresh(rescuetime_connection).lease_owner == ""


def test_a_long_sync_renews_its_lease_as_pages_are_stored(fitbit_connection, monkeypatch):
    monkeypatch.setattr(runner, "LEASE_RENEW_S", 0)
    observed = []

    def page_stored(run: SyncRun, stream: str, progress: float | None) -> None:
        connection = fresh(fitbit_connection)
        observed.append((connection.lease_owner, connection.lease_expires_at))
        # As if the lease were about to run out: the next page must extend it.
        UserDataSource.objects.filter(pk=fitbit_connection.pk).update(
            lease_expires_at=timezone.now() + timedelta(seconds=1)
        )

    run = connection_sync(fitbit_connection.pk, policy=NO_WAIT, on_page=page_stored)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    assert len(observed) >= 3
    owners = {owner for owner, _ in observed}
    assert len(owners) == 1 and "" not in owners
    for _, until in observed[1:]:
        assert until > timezone.now() + timedelta(minutes=5)  # renewed to a whole lease
    assert fresh(fitbit_connection).lease_owner == ""


def test_a_sync_requested_while_another_runs_follows_it(rescuetime_connection, settings):
    settings.SIBLING_SYNC_ON_DUE = True
    requested = []

    def provider_notifies(run: SyncRun, stream: str, progress: float | None) -> None:
        if not requested:
            requested.append(connection_sync_request(fresh(rescuetime_connection)))

    first = connection_sync(rescuetime_connection.pk, policy=NO_WAIT, on_page=provider_notifies)
    assert requested == [False]  # busy: not started beside the running sync
    runs = list(SyncRun.objects.filter(connection=rescuetime_connection).order_by("started_at"))
    assert [r.outcome for r in runs] == [Outcome.SUCCESS, Outcome.SUCCESS]
    assert runs[0].pk == first.pk and runs[1].started_at >= runs[0].ended_at
    assert fresh(rescuetime_connection).next_sync_at > timezone.now()


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


def test_a_too_old_window_is_clamped_and_logged_without_personal_data(
    fitbit_connection, settings, caplog
):
    hold_lease(fitbit_connection)  # so the window stays queued where the test can see it
    today = timezone.now().date()
    asked = date(2001, 2, 3)
    with caplog.at_level(logging.WARNING, logger="ingestion.notifications"):
        assert connection_window_fetch(fitbit_connection, stream="steps", first=asked, last=today)
    horizon = today - timedelta(days=settings.SIBLING_BACKFILL_DAYS)
    assert fresh(fitbit_connection).pending_windows == {
        "steps": {"first": horizon.isoformat(), "last": today.isoformat(), "asked": 1}
    }
    (message,) = [r.getMessage() for r in caplog.records if "clamped" in r.getMessage()]
    assert "2001" not in message and today.isoformat() not in message
    assert fitbit_connection.account_label not in message


def test_a_future_window_is_clamped_or_dropped(fitbit_connection, settings, caplog):
    hold_lease(fitbit_connection)
    today = timezone.now().date()
    with caplog.at_level(logging.WARNING, logger="ingestion.notifications"):
        assert connection_window_fetch(
            fitbit_connection, stream="sleep", first=today, last=date(2999, 12, 31)
        )
        assert not connection_window_fetch(
            fitbit_connection,
            stream="steps",
            first=today + timedelta(days=5),
            last=today + timedelta(days=6),
        )
    assert fresh(fitbit_connection).pending_windows == {
        "sleep": {
            "first": today.isoformat(),
            "last": (today + timedelta(days=1)).isoformat(),
            "asked": 1,
        }
    }
    assert len([r for r in caplog.records if "clamped" in r.getMessage()]) == 2


def test_a_notification_naming_only_future_days_fetches_nothing(
    fitbit_connection, sandbox, settings
):
    settings.SIBLING_PUBLIC_URL = sandbox.url
    settings.FITBIT_WEBHOOK_PUBLIC_KEY = sandbox_hooks.health_public_key_pem()
    notify(sandbox, settings, fitbit_connection, timezone.now().date() + timedelta(days=400))
    event = WebhookEvent.objects.get(provider="fitbit")
    assert event.status == WebhookEvent.Status.PROCESSED and "out of bounds" in event.error
    assert not SyncRun.objects.filter(connection=fitbit_connection).exists()
    assert fresh(fitbit_connection).pending_windows == {}


def test_a_notification_names_the_persons_civil_days_with_the_end_excluded():
    from sources.providers.fitbit.webhooks import _days

    body = sandbox_hooks.health_notification_body(
        "someone",
        "steps",
        [("2026-03-04", "2026-03-04"), ("2026-03-01", "2026-03-02")],
        utc_offset_s=-8 * 3600,
    )
    assert _days(body["data"]["intervals"]) == (date(2026, 3, 1), date(2026, 3, 4))
    civil_only = [
        {"civilDateTimeInterval": i["civilDateTimeInterval"]} for i in body["data"]["intervals"]
    ]
    assert _days(civil_only) == (date(2026, 3, 1), date(2026, 3, 4))
    physical_only = [{"physicalTimeInterval": body["data"]["intervals"][0]["physicalTimeInterval"]}]
    assert _days(physical_only) == (date(2026, 3, 4), date(2026, 3, 5))  # UTC, a day either side


def test_a_reconnect_while_a_sync_runs_leaves_its_lease_and_cursors(
    rescuetime_connection, monkeypatch
):
    from ingestion import fence
    from sources.providers.rescuetime import RescueTime
    from sources.services import connection_upsert

    key = rescuetime_connection.sandbox_account
    holder = {}
    ensure = fence.data_key_ensure

    def a_sync_starts_meanwhile(user_id):
        # Between the reconnect's read of the connection and its write, a sync takes the lease
        # and stores a cursor.
        holder["owner"], _ = hold_lease(rescuetime_connection)
        UserDataSource.objects.filter(pk=rescuetime_connection.pk).update(
            cursors={"daily": "2026-01-05"}
        )
        return ensure(user_id)

    monkeypatch.setattr(fence, "data_key_ensure", a_sync_starts_meanwhile)
    connection_upsert(
        user=rescuetime_connection.user,
        provider=RescueTime,
        external_account_id=RescueTime.external_account_id_for_key(key),
        credentials={"api_key": key},
    )
    connection = fresh(rescuetime_connection)
    assert connection.lease_owner == holder["owner"]
    assert connection.cursors == {"daily": "2026-01-05"}
