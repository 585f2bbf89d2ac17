"""One worker process drives several syncs at once: dispatch enqueues what it claims in groups of
SIBLING_SYNC_THREADS, and a group's task runs its syncs on threads, each under its own lease, with
its own cursors and counts; a claim that is stale or delivered twice is skipped, never run beside
the holder."""

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from ingestion import runner, scheduler, tasks
from ingestion.models import BudgetBucket, SyncRun
from ingestion.runner import connections_sync
from ingestion.scheduler import connection_claim, connection_sync_enqueue, dispatch_due_syncs
from ingestion.storage import records_collection
from sources.models import UserDataSource
from tests.factories import UserDataSourceFactory, UserFactory
from tests.ingestion.conftest import NO_WAIT, fresh, stored, sync
from tests.sources.providers.kit import sandbox_connection

pytestmark = pytest.mark.django_db(transaction=True)
Outcome = SyncRun.Outcome
PATIENCE_S = 60


@pytest.fixture
def queued(monkeypatch) -> list[tuple[str, tuple]]:
    """The tasks dispatch enqueues (function, arguments), kept here instead of run."""
    tasks_queued: list[tuple[str, tuple]] = []
    monkeypatch.setattr(
        scheduler, "async_task", lambda func, *args, **kwargs: tasks_queued.append((func, args))
    )
    return tasks_queued


@pytest.fixture
def key_connections(sandbox):
    """Three people's connections by API key, due now."""
    connections = [sandbox_connection(UserFactory(), auth_mode="api_key") for _ in range(3)]
    UserDataSource.objects.filter(pk__in=[c.pk for c in connections]).update(
        next_sync_at=timezone.now() - timedelta(minutes=1)
    )
    return connections


def syncs_meet_in_their_processors(provider: Any, monkeypatch, parties: int) -> None:
    """Each sync's first page waits in the processor until ``parties`` syncs are there at once:
    syncs run one after another would never meet (the barrier breaks and the sync fails)."""
    processor = provider.processor()
    barrier = threading.Barrier(parties, timeout=PATIENCE_S)
    met = set()

    def meets(stream: str, payload: Any) -> Any:
        me = threading.current_thread().name
        if me not in met:
            met.add(me)
            barrier.wait()
        return processor(stream, payload)

    monkeypatch.setattr(provider, "processor", classmethod(lambda cls: meets))


def test_dispatch_enqueues_claims_in_groups_of_the_thread_count(settings, queued):
    settings.SIBLING_SYNC_THREADS = 2
    due = [
        UserDataSourceFactory(next_sync_at=timezone.now() - timedelta(minutes=n + 1))
        for n in range(5)
    ]
    claimed = dispatch_due_syncs()
    assert sorted(claimed) == sorted(str(c.pk) for c in due)
    assert [func for func, _ in queued] == [
        "ingestion.tasks.sync_connections",
        "ingestion.tasks.sync_connections",
        "ingestion.tasks.sync_connection",  # the last one alone
    ]
    grouped = [pair for _, (group, trigger) in queued[:2] for pair in group]
    alone = queued[2][1]
    pairs = dict([*grouped, alone[:2]])
    # Every claimed connection once, with the lease owner its claim took.
    assert sorted(pairs) == sorted(claimed)
    for connection in due:
        assert fresh(connection).lease_owner == pairs[str(connection.pk)]


def test_a_requested_sync_stays_one_task(settings, queued):
    settings.SIBLING_SYNC_THREADS = 8
    connection = UserDataSourceFactory(next_sync_at=timezone.now() - timedelta(minutes=1))
    assert connection_sync_enqueue(connection_id=connection.pk, trigger=SyncRun.Trigger.MANUAL)
    assert queued == [
        (
            "ingestion.tasks.sync_connection",
            (str(connection.pk), fresh(connection).lease_owner, SyncRun.Trigger.MANUAL),
        )
    ]


def test_one_worker_runs_a_group_of_syncs_at_once_each_with_its_own_lease_and_cursors(
    key_connections, settings, queued, monkeypatch
):
    settings.SIBLING_SYNC_THREADS = 3
    syncs_meet_in_their_processors(key_connections[0].provider_class, monkeypatch, parties=3)
    dispatch_due_syncs()
    assert [func for func, _ in queued] == ["ingestion.tasks.sync_connections"]
    outcomes = tasks.sync_connections(*queued[0][1])
    assert outcomes == [Outcome.SUCCESS] * 3
    monkeypatch.undo()
    created = 0
    for connection in key_connections:
        runs = list(SyncRun.objects.filter(connection=connection))
        assert [r.outcome for r in runs] == [Outcome.SUCCESS], runs[0].error_message
        after = fresh(connection)
        assert after.lease_owner == "" and after.lease_expires_at is None
        assert after.cursors and after.next_sync_at > timezone.now()
        # Its own records only, counted by its own run.
        assert len(stored(connection)) == runs[0].created > 0
        assert after.records_stored == runs[0].created
        created += runs[0].created
    # Nothing written under another connection's person, nothing beside the runs' counts.
    records = records_collection(f"{key_connections[0].provider_class.category}_data")
    pks = [c.pk for c in key_connections]
    assert records.count_documents({"connection": {"$in": pks}}) == created
    for connection in key_connections:
        foreign = {"connection": connection.pk, "user": {"$ne": connection.user_id}}
        assert records.count_documents(foreign) == 0
    # The cursors were stored right: the next syncs find nothing new.
    for connection in key_connections:
        again = sync(connection)
        assert again.outcome == Outcome.SUCCESS and again.created == 0


def test_a_stale_claim_is_skipped_never_run_beside_the_holder(key_connections):
    connection = key_connections[0]
    owner = connection_claim(connection_id=connection.pk, due=False)
    claims = [(connection.pk, "an-expired-claim"), (connection.pk, owner)]
    outcomes = connections_sync(claims, threads=2, policy=NO_WAIT)
    # The claim's holder ran it; the stale claim found the lease held (or given back already)
    # and did nothing.
    assert outcomes == ["skipped", Outcome.SUCCESS]
    assert SyncRun.objects.filter(connection=connection).count() == 1
    assert fresh(connection).lease_owner == ""
    # A group delivered again after it ran: its claims were given back, nothing runs.
    assert connections_sync(claims, policy=NO_WAIT) == ["skipped", "skipped"]
    assert SyncRun.objects.filter(connection=connection).count() == 1


def test_one_sync_that_raises_lets_the_others_finish_then_fails_the_task(
    key_connections, monkeypatch
):
    broken, *others = key_connections
    connection_sync = runner.connection_sync

    def crashes_for_one(connection_id, **kwargs):
        if connection_id == broken.pk:
            raise RuntimeError("the database went away")
        return connection_sync(connection_id, **kwargs)

    monkeypatch.setattr(runner, "connection_sync", crashes_for_one)
    claims = [(c.pk, connection_claim(connection_id=c.pk)) for c in key_connections]
    with pytest.raises(RuntimeError):
        connections_sync(claims, policy=NO_WAIT)
    for connection in others:
        run = SyncRun.objects.get(connection=connection)
        assert run.outcome == Outcome.SUCCESS, run.error_message
        assert fresh(connection).lease_owner == ""
    # The task is retried: what ran is skipped, the one that raised runs under its claim.
    monkeypatch.undo()
    assert connections_sync(claims, policy=NO_WAIT) == [Outcome.SUCCESS, "skipped", "skipped"]


def test_syncs_run_at_once_share_the_applications_budget_and_never_exceed_it(sandbox, settings):
    people = [UserFactory() for _ in range(3)]
    connections = [
        sandbox_connection(person, auth_mode="oauth2", category="behavioral") for person in people
    ]
    provider = connections[0].provider_class
    shared = next((b for b in provider.budgets_declared() if b.per == "app"), None)
    if shared is None:
        pytest.skip("the provider declares no application-wide budget")
    settings.SIBLING_BUDGETS = True
    # Half the limit at once, the rest over the minute: the three syncs together need more than
    # the minute allows, however they interleave; none waits, each defers when the bucket is dry.
    settings.SIBLING_BUDGET_BURST = 0.5
    settings.SIBLING_BUDGET_MAX_WAIT_S = 0
    limit = 8
    setattr(settings, f"{provider.id.upper()}_BUDGET_{shared.name.upper()}", limit)
    claims = [(c.pk, connection_claim(connection_id=c.pk, due=False)) for c in connections]
    outcomes = connections_sync(claims, policy=NO_WAIT)
    assert set(outcomes) <= {Outcome.SUCCESS, Outcome.DEFERRED} and Outcome.DEFERRED in outcomes
    runs = [SyncRun.objects.get(connection=c) for c in connections]
    assert sum(run.api_calls for run in runs) <= limit
    assert all(run.rate_limited == 0 for run in runs)
    bucket = BudgetBucket.objects.get(provider=provider.id, budget=shared.name)
    assert bucket.units <= limit
    for connection, run in zip(connections, runs, strict=True):
        after = fresh(connection)
        assert after.lease_owner == "" and after.status == UserDataSource.Status.ACTIVE
        # A deferred sync kept what it stored, cursor included.
        assert len(stored(connection)) == run.created
        assert bool(after.cursors) == (run.pages > 0)
        if run.outcome == Outcome.DEFERRED:
            # Deferred to the bucket's refill, which may be a fraction of a second away: later
            # than the run began, within the budget's window.
            assert (
                run.started_at
                < after.next_sync_at
                <= timezone.now() + timedelta(seconds=shared.window_s)
            )
