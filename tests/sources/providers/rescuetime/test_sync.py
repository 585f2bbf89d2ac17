"""RescueTime syncs against its sandbox over HTTP: today's hours and the daily feed."""

import pytest

from ingestion.models import SyncRun
from sources.models import UserDataSource
from tests.ingestion.conftest import fresh, stored, sync
from tests.sources.providers.kit import sandbox_fault

pytestmark = pytest.mark.django_db(transaction=True)
Status = UserDataSource.Status
Outcome = SyncRun.Outcome


def test_hours_and_days(connection):
    run = sync(connection)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    kinds = {r["kind"] for r in stored(connection, "behavioral_data")}
    assert kinds == {"productivity_hour", "productivity_day"}
    again = sync(connection)
    assert again.api_calls == 2  # one per stream: today's hours, the daily feed


def test_key_no_longer_accepted_gives_reauth_required(connection):
    sandbox_fault(connection, "revoke")
    sync(connection)
    assert fresh(connection).status == Status.REAUTH_REQUIRED
