"""Google Health notifications name windows of days: a window fetch waits for a sync holding
the lease and is fetched after it, never beside it; windows are bounded, and what is clamped is
logged without personal data."""

import logging
from datetime import date, timedelta

import pytest
from django.utils import timezone

from ingestion.fence import erasure_subject
from ingestion.models import ErasureRecord, SyncRun, WebhookEvent
from ingestion.notifications import connection_window_fetch
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


def test_a_window_fetch_while_a_sync_runs_waits_for_it_and_both_sets_of_records_arrive(
    connection, sandbox, settings
):
    settings.SIBLING_PUBLIC_URL = sandbox.url
    assert connection_sync(connection.pk, policy=NO_WAIT).outcome == Outcome.SUCCESS
    # Two days an incremental sync does not fetch again (it refetches only the last two).
    today = timezone.now().date()
    older, newer = today - timedelta(days=8), today - timedelta(days=6)
    for day in (older, newer):
        records_collection("behavioral_data").delete_one(
            {"connection": connection.pk, "external_id": day.isoformat()}
        )
    UserDataSource.objects.filter(pk=connection.pk).update(next_sync_at=timezone.now())
    assert dispatch_due_syncs(enqueue=False) == [str(connection.pk)]
    owner = fresh(connection).lease_owner
    seen = []

    def during_the_sync(run: SyncRun, stream: str, progress: float | None) -> None:
        if seen:
            return
        # Two notifications arrive while this sync holds the lease; each starts a window fetch.
        notify(sandbox, settings, connection, newer)
        notify(sandbox, settings, connection, older)
        now = fresh(connection)
        seen.append(
            {
                "holder": SyncRun.objects.get(pk=run.pk).outcome,
                "lease_owner": now.lease_owner,
                "pending": now.pending_windows,
                "window_runs": SyncRun.objects.filter(trigger=SyncRun.Trigger.WEBHOOK).count(),
            }
        )

    holder = connection_sync(
        connection.pk, lease_owner=owner, policy=NO_WAIT, on_page=during_the_sync
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
    window = SyncRun.objects.get(connection=connection, trigger=SyncRun.Trigger.WEBHOOK)
    assert window.outcome == Outcome.SUCCESS, window.error_message
    assert window.started_at >= holder.ended_at
    assert not SyncRun.objects.filter(error_class="Interrupted").exists()
    assert steps_day(connection, older) and steps_day(connection, newer)
    after = fresh(connection)
    assert after.pending_windows == {}
    assert after.lease_owner == "" and after.lease_expires_at is None


def test_a_window_queued_behind_a_killed_sync_is_fetched_after_the_next_sync(connection, settings):
    _, dead_run = hold_lease(connection)
    day = timezone.now().date() - timedelta(days=3)
    assert connection_window_fetch(connection, stream="steps", first=day, last=day)
    assert fresh(connection).pending_windows  # queued, not dropped
    assert not steps_day(connection, day)
    # The holder's worker was killed: its lease runs out, and the next sync takes over.
    UserDataSource.objects.filter(pk=connection.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert connection_sync(connection.pk, policy=NO_WAIT).outcome == Outcome.SUCCESS
    dead_run.refresh_from_db()
    assert dead_run.error_class == "Interrupted"
    assert SyncRun.objects.get(trigger=SyncRun.Trigger.WEBHOOK).outcome == Outcome.SUCCESS
    assert fresh(connection).pending_windows == {}


def test_windows_wait_behind_a_sync_that_did_not_succeed(connection):
    """A sync stopped by the person's erasure (or failed, or deferred by the provider) starts no
    window fetch as it ends: the windows stay queued for a sync that succeeds."""
    owner, _ = hold_lease(connection)
    day = timezone.now().date() - timedelta(days=3)
    assert connection_window_fetch(connection, stream="steps", first=day, last=day)

    def erasure_begins(run: SyncRun, stream: str, progress: float | None) -> None:
        ErasureRecord.objects.get_or_create(
            subject=erasure_subject(connection.user_id),
            defaults={"erased_at": timezone.now(), "completed": False},
        )

    run = connection_sync(connection.pk, lease_owner=owner, policy=NO_WAIT, on_page=erasure_begins)
    assert run.error_class == "PersonErased"
    assert not SyncRun.objects.filter(trigger=SyncRun.Trigger.WEBHOOK).exists()
    assert fresh(connection).pending_windows  # still queued, not dropped


def test_a_notification_for_the_same_days_during_their_fetch_is_fetched_again(connection):
    day = timezone.now().date() - timedelta(days=3)
    hold_lease(connection)  # so the first notification's window waits, queued
    assert connection_window_fetch(connection, stream="steps", first=day, last=day)
    UserDataSource.objects.filter(pk=connection.pk).update(lease_owner="", lease_expires_at=None)
    notified = []

    def the_day_changes_again(run: SyncRun, stream: str, progress: float | None) -> None:
        # The provider says this day changed again, after its page was read: the fetch
        # running now may not have seen that change, so the window must not leave the queue.
        if not notified:
            notified.append(
                connection_window_fetch(connection, stream="steps", first=day, last=day)
            )

    first = connection_sync(
        connection.pk,
        trigger=SyncRun.Trigger.WEBHOOK,  # as the window task runs it
        policy=NO_WAIT,
        windows=True,
        on_page=the_day_changes_again,
    )
    assert first.outcome == Outcome.SUCCESS and notified == [True]
    windows = SyncRun.objects.filter(connection=connection, trigger=SyncRun.Trigger.WEBHOOK)
    assert [r.outcome for r in windows.order_by("started_at")] == [Outcome.SUCCESS] * 2
    assert fresh(connection).pending_windows == {}


def test_a_too_old_window_is_clamped_and_logged_without_personal_data(connection, settings, caplog):
    hold_lease(connection)  # so the window stays queued where the test can see it
    today = timezone.now().date()
    asked = date(2001, 2, 3)
    with caplog.at_level(logging.WARNING, logger="ingestion.notifications"):
        assert connection_window_fetch(connection, stream="steps", first=asked, last=today)
    horizon = today - timedelta(days=settings.SIBLING_BACKFILL_DAYS)
    assert fresh(connection).pending_windows == {
        "steps": {"first": horizon.isoformat(), "last": today.isoformat(), "asked": 1}
    }
    (message,) = [r.getMessage() for r in caplog.records if "clamped" in r.getMessage()]
    assert "2001" not in message and today.isoformat() not in message
    assert connection.account_label not in message


def test_a_window_is_bounded_by_the_history_the_person_chose(connection, settings):
    """A notification fetches as far back as the person's history window reaches: not cut at
    the default when they chose a year, not beyond the 30 days they chose."""
    settings.SIBLING_BACKFILL_DAYS = 90
    hold_lease(connection)
    today = timezone.now().date()
    UserDataSource.objects.filter(pk=connection.pk).update(backfill_days=365)
    long_ago = today - timedelta(days=200)
    assert connection_window_fetch(fresh(connection), stream="steps", first=long_ago, last=long_ago)
    assert fresh(connection).pending_windows["steps"]["first"] == long_ago.isoformat()
    UserDataSource.objects.filter(pk=connection.pk).update(backfill_days=30, pending_windows={})
    weeks_ago = today - timedelta(days=60)
    assert not connection_window_fetch(
        fresh(connection), stream="steps", first=weeks_ago, last=weeks_ago
    )
    assert fresh(connection).pending_windows == {}


def test_a_future_window_is_clamped_or_dropped(connection, settings, caplog):
    hold_lease(connection)
    today = timezone.now().date()
    with caplog.at_level(logging.WARNING, logger="ingestion.notifications"):
        assert connection_window_fetch(
            connection, stream="sleep", first=today, last=date(2999, 12, 31)
        )
        assert not connection_window_fetch(
            connection,
            stream="steps",
            first=today + timedelta(days=5),
            last=today + timedelta(days=6),
        )
    assert fresh(connection).pending_windows == {
        "sleep": {
            "first": today.isoformat(),
            "last": (today + timedelta(days=1)).isoformat(),
            "asked": 1,
        }
    }
    assert len([r for r in caplog.records if "clamped" in r.getMessage()]) == 2


def test_a_notification_naming_only_future_days_fetches_nothing(connection, sandbox, settings):
    settings.SIBLING_PUBLIC_URL = sandbox.url
    notify(sandbox, settings, connection, timezone.now().date() + timedelta(days=400))
    event = WebhookEvent.objects.get(provider="fitbit")
    assert event.status == WebhookEvent.Status.PROCESSED and "out of bounds" in event.error
    assert not SyncRun.objects.filter(connection=connection).exists()
    assert fresh(connection).pending_windows == {}


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
