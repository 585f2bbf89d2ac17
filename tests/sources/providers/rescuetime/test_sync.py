"""RescueTime syncs against its sandbox over HTTP: today's hours and the daily feed."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from ingestion.models import SyncRun
from ingestion.storage import record_decode
from sibling.people import person_of
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


def zone_where_today_is_not_utcs() -> str:
    """A zone whose date differs from UTC's right now: twelve hours behind before noon UTC,
    fourteen ahead after."""
    return "Etc/GMT+12" if timezone.now().hour < 12 else "Etc/GMT-14"


def test_local_times_are_read_in_the_persons_zone_and_days_are_theirs(connection):
    name = zone_where_today_is_not_utcs()
    zone = ZoneInfo(name)
    person = person_of(connection.user)
    person.time_zone = name
    person.save(update_fields=["time_zone"])

    run = sync(connection)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    records = [record_decode(r, owner_id=connection.user_id) for r in stored(connection)]
    hours = [r for r in records if r["kind"] == "productivity_hour"]
    days = [r for r in records if r["kind"] == "productivity_day"]
    assert hours and days
    offset_min = int(zone.utcoffset(None).total_seconds() // 60)
    for record in hours:
        local = datetime.fromisoformat(record["data"]["hour"]).replace(tzinfo=zone)
        assert record["occurred_at"] == local.astimezone(UTC)
        assert record["data"]["utc_offset_min"] == offset_min
    for record in days:
        day = datetime.fromisoformat(record["data"]["date"]).replace(tzinfo=zone)
        assert record["occurred_at"] == day.astimezone(UTC)
    # The person's today is still being recorded: the hours' cursor stops at their yesterday
    # (by UTC's date it would be a day off, and a day still going on would be marked done).
    yesterday = timezone.now().astimezone(zone).date() - timedelta(days=1)
    assert fresh(connection).cursors["hours"] == yesterday.isoformat()
