"""Google Health syncs against its sandbox over HTTP: daily activity, heart rate and sleep."""

import pytest

from ingestion.models import SyncRun
from ingestion.storage import record_decode
from tests.ingestion.conftest import stored, sync

pytestmark = pytest.mark.django_db(transaction=True)
Outcome = SyncRun.Outcome


def test_days_and_sleep(connection):
    run = sync(connection)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    records = stored(connection, "behavioral_data")
    kinds = {r["kind"] for r in records}
    assert kinds == {"activity_day", "heart_rate_day", "sleep_session"}
    steps = [r for r in records if r["kind"] == "activity_day"]
    assert all("data" not in r for r in records)
    assert all(record_decode(r, owner_id=r["user"])["data"]["steps"] >= 0 for r in steps)
    assert len({r["external_id"] for r in steps}) == len(steps)
    again = sync(connection)
    assert again.outcome == Outcome.SUCCESS and again.api_calls == 3  # one per stream
