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


def test_records_keep_the_sources_offset_in_minutes(connection):
    from datetime import UTC, datetime

    run = sync(connection)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    records = [record_decode(r, owner_id=r["user"]) for r in stored(connection, "behavioral_data")]
    offsets = {r["data"]["utc_offset_min"] for r in records}
    # The sandbox account lives at one fixed offset, which every record names.
    assert len(offsets) == 1 and None not in offsets
    (offset,) = offsets
    for record in records:
        if record["kind"] == "activity_day":
            midnight = datetime.fromisoformat(record["data"]["date"]).replace(tzinfo=UTC)
            # The day began at local midnight: its UTC instant less the offset.
            assert (midnight - record["occurred_at"]).total_seconds() == offset * 60
