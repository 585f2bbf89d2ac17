"""Dispatch claims each due connection once, whoever else dispatches at the same time."""

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.utils import timezone

from ingestion.scheduler import connection_claim, dispatch_due_syncs
from sources.models import UserDataSource
from tests.factories import UserDataSourceFactory

pytestmark = pytest.mark.django_db(transaction=True)
Status = UserDataSource.Status


def test_only_due_active_unleased_connections_are_claimed():
    now = timezone.now()
    due = UserDataSourceFactory(next_sync_at=now - timedelta(minutes=1))
    UserDataSourceFactory(next_sync_at=now + timedelta(hours=1))
    UserDataSourceFactory(next_sync_at=now - timedelta(minutes=1), status=Status.PAUSED)
    UserDataSourceFactory(
        next_sync_at=now - timedelta(minutes=1), lease_expires_at=now + timedelta(minutes=5)
    )
    assert dispatch_due_syncs(now=now, enqueue=False) == [str(due.pk)]
    due.refresh_from_db()
    assert due.lease_owner and due.lease_expires_at > now
    # Claimed already: a second dispatch (a schedule firing twice) takes nothing.
    assert dispatch_due_syncs(now=now, enqueue=False) == []


def test_an_expired_lease_can_be_claimed_again():
    now = timezone.now()
    stuck = UserDataSourceFactory(
        next_sync_at=now - timedelta(hours=1),
        lease_owner="dead-worker",
        lease_expires_at=now - timedelta(seconds=1),
    )
    assert dispatch_due_syncs(now=now, enqueue=False) == [str(stuck.pk)]


def test_concurrent_claims_of_one_connection_have_one_winner():
    connection = UserDataSourceFactory(next_sync_at=timezone.now() - timedelta(minutes=1))
    with ThreadPoolExecutor(max_workers=8) as pool:
        owners = list(pool.map(lambda _: connection_claim(connection_id=connection.pk), range(16)))
    assert len([o for o in owners if o]) == 1
