"""A worker killed with SIGKILL in the middle of a Google Health backfill (many daily pages),
then restarted, ends with exactly the sandbox's record set: nothing lost, nothing duplicated."""

import os
import signal
import sys
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.utils import timezone

from ingestion.models import RawPage, SyncRun
from ingestion.runner import connection_sync
from ingestion.storage import record_decode, records_collection
from sources.models import UserDataSource
from sources.providers.fitbit import Fitbit
from sources.providers.fitbit import sandbox as sandbox_health
from sources.sandbox.testing import google_credentials
from sources.services import connection_upsert
from tests.factories import UserFactory
from tests.helpers import BASE_DIR, kill_group, project_env, start_process
from tests.ingestion.conftest import NO_WAIT, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def _records(connection) -> dict[tuple[str, str], dict]:
    return {
        (r["kind"], r["external_id"]): record_decode(r, owner_id=r["user"])["data"]
        for r in records_collection("behavioral_data").find({"connection": connection.pk})
    }


def test_sigkill_mid_backfill_then_restart_ends_with_the_sandbox_record_set(
    connection, sandbox, settings, monkeypatch
):
    settings.SIBLING_BACKFILL_DAYS = 30
    # Today's data in the sandbox grows with the clock (a sample every 5 minutes): the synced
    # copies and the reference must see the same moment of it.
    frozen = timezone.now()
    monkeypatch.setattr(sandbox_health, "timezone", SimpleNamespace(now=lambda: frozen))
    env = project_env(SIBLING_SANDBOX_BASE_URL=f"{sandbox.url}/sandbox", SIBLING_BACKFILL_DAYS="30")
    worker = start_process(
        [sys.executable, str(BASE_DIR / "manage.py"), "sync", str(connection.pk)], env
    )
    try:
        wait_until(lambda: RawPage.objects.filter(connection=connection).count() >= 2)
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
    finally:
        kill_group(worker)
    assert worker.returncode == -signal.SIGKILL
    interrupted = _records(connection)
    assert interrupted  # it was killed after storing something, before finishing

    # The killed worker's lease still runs: nobody may sync beside it, nor call its run
    # interrupted, until the lease has expired.
    killed = SyncRun.objects.get(connection=connection)
    assert killed.outcome == SyncRun.Outcome.RUNNING
    assert connection_sync(connection.pk, policy=NO_WAIT) is None
    assert SyncRun.objects.get(pk=killed.pk).outcome == SyncRun.Outcome.RUNNING
    UserDataSource.objects.filter(pk=connection.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)  # as time would
    )

    run = connection_sync(connection.pk, policy=NO_WAIT)
    assert run.outcome == SyncRun.Outcome.SUCCESS, run.error_message
    killed.refresh_from_db()
    assert killed.outcome == SyncRun.Outcome.FAILED and killed.error_class == "Interrupted"

    # The same sandbox account synced once, cleanly, by someone else: the reference set.
    reference = connection_upsert(
        user=UserFactory(),
        provider=Fitbit,
        external_account_id="reference",
        credentials=google_credentials(Fitbit, connection.sandbox_account),
    )
    assert connection_sync(reference.pk, policy=NO_WAIT).outcome == SyncRun.Outcome.SUCCESS
    resumed, clean = _records(connection), _records(reference)
    assert resumed.keys() == clean.keys()
    assert resumed == clean
    ids = [
        r["external_id"]
        for r in records_collection("behavioral_data").find({"connection": connection.pk})
    ]
    assert len(ids) == len(set((k, i) for k, i in resumed))
