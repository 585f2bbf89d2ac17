"""Records as the pipeline stores them, and requests to the records API, for its tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from ingestion.events import PROVIDER as EVENTS_PROVIDER
from ingestion.fence import data_key_ensure
from ingestion.schemas import ProcessedPage, Record, kinds_all
from ingestion.storage import StoreCounts, page_store

RECORDS_URL = "/api/v1/records/"
CONNECTIONS_URL = "/api/v1/connections/"
T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)


def kind_of(category: str) -> str:
    """A registered kind of the category (named by the registry, not here)."""
    return sorted(kind.name for kind in kinds_all() if kind.category == category)[0]


def store(
    user: Any,
    kind: str,
    n: int,
    *,
    start: int = 0,
    provider: str = EVENTS_PROVIDER,
    connection: Any = None,
    data: dict | None = None,
) -> StoreCounts:
    """``n`` records of ``kind`` for the person (ids ``<kind>-<i>``), stored through the
    pipeline's store (sealed under the person's key), one hour apart from T0 + start hours."""
    data_key_ensure(user.pk)
    records = [
        Record(
            kind=kind,
            external_id=f"{kind}-{i}",
            occurred_at=T0 + timedelta(hours=i),
            data={"i": i, **(data or {})},
        )
        for i in range(start, start + n)
    ]
    if connection is not None:
        return page_store(connection=connection, stream="test", processed=ProcessedPage(records))
    return page_store(
        connection=None,
        stream="test",
        processed=ProcessedPage(records),
        user_id=user.pk,
        provider=provider,
    )


def get(client: Any, url: str, secret: str | None, **params: Any) -> Any:
    headers = {"HTTP_AUTHORIZATION": f"Bearer {secret}"} if secret else {}
    return client.get(url, params, **headers)


def walk(client: Any, secret: str, **params: Any) -> list[dict]:
    """Every record of a pass, following ``next`` to the end."""
    seen: list[dict] = []
    response = get(client, RECORDS_URL, secret, **params)
    while True:
        assert response.status_code == 200, response.content
        body = response.json()
        seen += body["results"]
        if not body["next"]:
            return seen
        response = client.get(body["next"], HTTP_AUTHORIZATION=f"Bearer {secret}")
