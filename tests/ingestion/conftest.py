"""Connections made the real way against the sandbox (over HTTP), ready to sync."""

import time
import uuid

import pytest
from django.utils import timezone

from ingestion.http import RetryPolicy
from ingestion.models import SyncRun
from ingestion.scheduler import connection_claim
from sources.models import UserDataSource
from sources.providers.fitbit import Fitbit
from sources.providers.plaid import Plaid
from sources.sandbox.testing import google_credentials, plaid_item_link
from sources.services import connection_upsert
from tests.factories import UserFactory

NO_WAIT = RetryPolicy(sleep=lambda seconds: None)


@pytest.fixture
def sandbox(live_server, settings):
    settings.SIBLING_SANDBOX_BASE_URL = f"{live_server.url}/sandbox"
    settings.SIBLING_BACKFILL_DAYS = 14
    return live_server


@pytest.fixture
def person(db):
    return UserFactory()


@pytest.fixture
def fitbit_connection(sandbox, person):
    email = f"fit-{uuid.uuid4().hex[:8]}@example.com"
    credentials = google_credentials(Fitbit, email)
    connection = connection_upsert(
        user=person,
        provider=Fitbit,
        external_account_id=Fitbit.external_account_id(uid=email, credentials=credentials),
        credentials=credentials,
        account_label=email,
    )
    connection.sandbox_account = email
    return connection


@pytest.fixture
def plaid_connection(sandbox, person):
    exchanged = plaid_item_link(client_user_id=str(person.pk))
    connection = connection_upsert(
        user=person,
        provider=Plaid,
        external_account_id=exchanged["item_id"],
        credentials=exchanged,
        account_label="First Sandbox Bank",
    )
    connection.sandbox_account = exchanged["item_id"]
    return connection


@pytest.fixture
def rescuetime_connection(sandbox, person):
    from sources.providers.rescuetime import RescueTime

    key = f"sandbox-{uuid.uuid4().hex[:12]}"
    connection = connection_upsert(
        user=person,
        provider=RescueTime,
        external_account_id=RescueTime.external_account_id_for_key(key),
        credentials={"api_key": key},
    )
    connection.sandbox_account = key
    return connection


def fresh(connection: UserDataSource) -> UserDataSource:
    return UserDataSource.objects.get(pk=connection.pk)


def hold_lease(connection: UserDataSource) -> tuple[str, SyncRun]:
    """Another worker's sync of this connection, running: it holds the lease and its run says
    "running"."""
    owner = connection_claim(connection_id=connection.pk, due=False)
    assert owner
    run = SyncRun.objects.create(
        connection=connection,
        user_id=connection.user_id,
        provider=connection.provider,
        trigger=SyncRun.Trigger.SCHEDULE,
        started_at=timezone.now(),
    )
    return owner, run


def wait_until(predicate, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


# What a record keeps in plaintext: what the system needs to find and count records.
ENVELOPE = {
    "user",
    "provider",
    "kind",
    "external_id",
    "connection",
    "occurred_at",
    "sealed",
    "schema_version",
    "ingested_at",
    "updated_at",
    "raw_page",
}
