"""Dispatch reads only the due entries of the (status, next_sync_at) index, on any server: its
cost follows the number due, not the number of connections."""

import json
from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone
from pymongo import MongoClient, monitoring

from ingestion import scheduler
from ingestion.scheduler import dispatch_due_syncs
from sibling import mongo
from sources.models import UserDataSource
from tests.factories import UserDataSourceFactory

pytestmark = pytest.mark.django_db(transaction=True)


class _Finds(monitoring.CommandListener):
    def __init__(self) -> None:
        self.commands: list[dict] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "find":
            self.commands.append(dict(event.command))

    def succeeded(self, event: object) -> None:
        pass

    def failed(self, event: object) -> None:
        pass


@pytest.fixture
def finds(monkeypatch):
    """The find commands dispatch sends, through a client that records them."""
    listener = _Finds()
    client = MongoClient(mongo.database_uri(), tz_aware=True, event_listeners=[listener])
    table = client[mongo.database_name()][UserDataSource._meta.db_table]
    monkeypatch.setattr(scheduler, "_connections", lambda: table)
    yield listener
    client.close()


def test_the_due_query_is_answered_from_the_due_index(finds, raw_db):
    now = timezone.now()
    due = UserDataSourceFactory(next_sync_at=now - timedelta(minutes=1))
    UserDataSourceFactory(next_sync_at=now + timedelta(hours=1))

    assert dispatch_due_syncs(now=now, enqueue=False) == [str(due.pk)]

    (command,) = finds.commands
    table = raw_db[UserDataSource._meta.db_table]
    plan = table.find(command["filter"]).sort(command["sort"]).explain()
    winning = json.dumps(plan["queryPlanner"]["winningPlan"], default=str)
    assert "COLLSCAN" not in winning
    assert "source_due" in winning


@override_settings(SIBLING_DISPATCH_BATCH=2)
def test_leased_due_connections_do_not_take_the_batch_of_those_free():
    now = timezone.now()
    for minutes in (30, 20):  # due the longest, and syncing now
        UserDataSourceFactory(
            next_sync_at=now - timedelta(minutes=minutes),
            lease_owner="running",
            lease_expires_at=now + timedelta(minutes=5),
        )
    free = [UserDataSourceFactory(next_sync_at=now - timedelta(minutes=m)) for m in (10, 5, 1)]

    assert dispatch_due_syncs(now=now, enqueue=False) == [str(c.pk) for c in free[:2]]
    assert dispatch_due_syncs(now=now, enqueue=False) == [str(free[2].pk)]
    assert dispatch_due_syncs(now=now, enqueue=False) == []
