"""Connections made the real way against the sandbox (over HTTP), ready to sync."""

import time

import pytest
from django.utils import timezone

from ingestion.http import RetryPolicy
from ingestion.models import SyncRun
from ingestion.scheduler import connection_claim
from sources.models import UserDataSource
from tests.factories import UserFactory
from tests.sources.providers.kit import sandbox_connection

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
def oauth_connection(sandbox, person):
    """A connection to an OAuth2 provider (tokens that expire and are refreshed)."""
    return sandbox_connection(person, auth_mode="oauth2")


@pytest.fixture
def link_connection(sandbox, person):
    """A connection through a hosted link (an access token that never expires)."""
    return sandbox_connection(person, auth_mode="hosted_link")


@pytest.fixture
def key_connection(sandbox, person):
    """A connection by API key: the simplest and fastest sync."""
    return sandbox_connection(person, auth_mode="api_key")


def sync(connection: UserDataSource, **kwargs) -> SyncRun | None:
    """One sync of the connection, as a worker runs it (retries without waiting)."""
    from ingestion.runner import connection_sync

    return connection_sync(connection.pk, policy=NO_WAIT, **kwargs)


def stored(connection: UserDataSource, collection: str = "") -> list[dict]:
    """The connection's records as stored (in its provider's category's collection)."""
    from ingestion.storage import records_collection

    collection = collection or f"{connection.provider_class.category}_data"
    return list(
        records_collection(collection).find(
            {"user": connection.user_id, "connection": connection.pk}
        )
    )


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
