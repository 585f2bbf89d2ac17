"""Dispatch claims each due connection once, whoever else dispatches at the same time."""

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.utils import timezone

from ingestion.scheduler import (
    connection_claim,
    connection_lease_release,
    connection_lease_renew,
    dispatch_due_syncs,
)
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


def test_a_claim_for_a_sync_asked_now_needs_no_schedule_but_still_one_holder():
    now = timezone.now()
    later = UserDataSourceFactory(next_sync_at=now + timedelta(hours=1))
    assert connection_claim(connection_id=later.pk, now=now) is None  # not due
    owner = connection_claim(connection_id=later.pk, now=now, due=False)
    assert owner
    assert connection_claim(connection_id=later.pk, now=now, due=False) is None  # held
    paused = UserDataSourceFactory(status=Status.PAUSED)
    assert connection_claim(connection_id=paused.pk, now=now, due=False) is None


def test_the_lease_is_renewed_and_released_only_by_its_owner():
    connection = UserDataSourceFactory(next_sync_at=timezone.now())
    owner = connection_claim(connection_id=connection.pk)
    assert not connection_lease_renew(connection_id=connection.pk, owner="someone-else")
    assert not connection_lease_release(connection_id=connection.pk, owner="someone-else")
    connection.refresh_from_db()
    assert connection.lease_owner == owner
    assert connection_lease_renew(connection_id=connection.pk, owner=owner)
    assert connection_lease_release(connection_id=connection.pk, owner=owner)
    connection.refresh_from_db()
    assert connection.lease_owner == "" and connection.lease_expires_at is None
