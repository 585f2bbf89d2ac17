"""Gmail's quotas in the sandbox, answered as Gmail answers them: units per user per minute
(403 userRateLimitExceeded) and per project (429 rateLimitExceeded), each method its cost from
the table settings.GMAIL_QUOTA_TABLE names; a batch charges each part; and a sync that meets
the quota defers and loses nothing."""

from __future__ import annotations

import json

import pytest
import requests

from ingestion.models import SyncRun
from sibling.mongo import plain_database
from sources.models import UserDataSource
from sources.providers.gmail import sandbox as imitation
from sources.providers.gmail.client import METADATA_HEADERS
from sources.providers.gmail.provider import Gmail
from sources.providers.google_batch import BatchCall, batch_decode, batch_encode
from sources.sandbox.quotas import quota_used
from tests.sources.providers.contracts import google_error_errors
from tests.sources.providers.kit import quota_met_then_freed

pytestmark = pytest.mark.django_db(transaction=True)


def auth(connection) -> dict[str, str]:
    fresh = UserDataSource.objects.get(pk=connection.pk)
    return {"Authorization": f"Bearer {fresh.credentials['access_token']}"}


def listed(connection, count: int = 5) -> requests.Response:
    return requests.get(
        f"{Gmail.url('api')}/users/me/messages",
        params={"maxResults": count},
        headers=auth(connection),
        timeout=30,
    )


def get(connection, message_id: str) -> requests.Response:
    return requests.get(
        f"{Gmail.url('api')}/users/me/messages/{message_id}",
        params={"format": "metadata", "metadataHeaders": list(METADATA_HEADERS)},
        headers=auth(connection),
        timeout=30,
    )


def ids_of(answer: requests.Response) -> list[str]:
    assert answer.status_code == 200, answer.text
    return [ref["id"] for ref in answer.json()["messages"]]


def user_used(connection) -> int:
    user = next(q for q in imitation.quotas() if q.name == "user")
    return quota_used("gmail", user, connection.sandbox_account)


def batch_post(connection, calls: list[BatchCall]) -> requests.Response:
    """The calls in one batch request to Gmail's batch endpoint."""
    content_type, body = batch_encode(calls)
    return requests.post(
        f"{Gmail.url('api').removesuffix('gmail/v1')}batch/gmail/v1",
        data=body,
        headers={"Content-Type": content_type, **auth(connection)},
        timeout=30,
    )


def test_the_per_user_quota_is_refused_as_gmail_does_and_not_charged(connection, settings):
    settings.SIBLING_SANDBOX_QUOTAS = "gmail.user=45"
    ids = ids_of(listed(connection))  # 5 units
    assert [get(connection, i).status_code for i in ids[:2]] == [200, 200]  # 20 each
    assert user_used(connection) == 45
    refused = get(connection, ids[2])
    assert refused.status_code == 403
    body = refused.json()
    assert google_error_errors(body) == []
    error = body["error"]
    assert (error["code"], error["message"]) == (403, "User Rate Limit Exceeded")
    assert error["errors"][0]["reason"] == "userRateLimitExceeded"
    assert error["errors"][0]["domain"] == "usageLimits"
    assert "Retry-After" not in refused.headers  # Gmail documents none
    assert user_used(connection) == 45  # the refused call spent nothing


def test_the_legacy_table_costs_a_message_5_units_of_15000(connection, settings):
    settings.SIBLING_SANDBOX_QUOTAS = "on"
    settings.GMAIL_QUOTA_TABLE = "legacy"
    ids = ids_of(listed(connection))
    assert get(connection, ids[0]).status_code == 200
    assert user_used(connection) == 10
    user = next(q for q in imitation.quotas() if q.name == "user")
    assert user.limit == 15_000
    settings.GMAIL_QUOTA_TABLE = "2026"
    assert next(q for q in imitation.quotas() if q.name == "user").limit == 6_000


def test_the_per_project_quota_answers_429_rate_limit_exceeded(connection, settings):
    settings.SIBLING_SANDBOX_QUOTAS = "gmail.project=5"
    assert listed(connection).status_code == 200
    refused = listed(connection)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert google_error_errors(refused.json()) == []
    assert (error["status"], error["errors"][0]["reason"]) == (
        "RESOURCE_EXHAUSTED",
        "rateLimitExceeded",
    )
    assert "Retry-After" not in refused.headers
    assert user_used(connection) == 5  # refused by the project: the user was not charged


def test_off_the_sandbox_never_refuses(connection, settings):
    settings.SIBLING_SANDBOX_QUOTAS = "off"
    ids = ids_of(listed(connection))
    assert {get(connection, i).status_code for i in ids} == {200}
    assert user_used(connection) == 0


def test_each_part_of_a_batch_is_charged_as_its_method(connection, settings):
    settings.SIBLING_SANDBOX_QUOTAS = "gmail.user=45"
    ids = ids_of(listed(connection))
    calls = [
        BatchCall(
            key=f"c{n}",
            url=f"{Gmail.url('api')}/users/me/messages/{message_id}",
            params={"format": "metadata", "metadataHeaders": list(METADATA_HEADERS)},
        )
        for n, message_id in enumerate(ids[:3])
    ]
    answer = batch_post(connection, calls)
    assert answer.status_code == 200  # the batch itself is not a call
    parts = batch_decode(answer.headers["Content-Type"], answer.content)
    statuses = sorted(part.status for part in parts.values())
    assert statuses == [200, 200, 403]
    refused = next(part for part in parts.values() if part.status == 403)
    assert json.loads(refused.body)["error"]["errors"][0]["reason"] == "userRateLimitExceeded"
    assert user_used(connection) == 45


def test_a_sync_that_meets_the_quota_defers_and_then_completes(connection, settings):
    """The real client over HTTP: the quota's 403 defers the connection (no data lost, the
    page is read again); with the quota free again the sync stores everything."""
    deferred, run = quota_met_then_freed(connection, settings, "gmail.user=100")
    assert "rate limit" in deferred.error_message
    stored = plain_database()["external_data"].count_documents(
        {"user": connection.user_id, "provider": "gmail"}
    )
    assert stored > 0
    assert stored == run.created + _created_before(connection, run)


def _created_before(connection, last_run) -> int:
    return sum(
        r.created
        for r in SyncRun.objects.filter(connection_id=connection.pk).exclude(pk=last_run.pk)
    )


def test_a_batch_is_one_round_trip_of_injected_latency(connection, settings, monkeypatch):
    """Its parts go through the wrapped views, but the HTTP request waits once."""
    from types import SimpleNamespace

    from sources.sandbox import latency

    ids = ids_of(listed(connection))
    slept: list = []
    monkeypatch.setattr(latency, "time", SimpleNamespace(sleep=slept.append))
    settings.SIBLING_SANDBOX_LATENCY_MS = "gmail=100,*=5"
    settings.SIBLING_SANDBOX_LATENCY_JITTER = 0
    calls = [
        BatchCall(
            key=f"c{n}",
            url=f"{Gmail.url('api')}/users/me/messages/{message_id}",
            params={"format": "metadata"},
        )
        for n, message_id in enumerate(ids[:3])
    ]
    answer = batch_post(connection, calls)
    assert answer.status_code == 200
    parts = batch_decode(answer.headers["Content-Type"], answer.content)
    assert sorted(part.status for part in parts.values()) == [200, 200, 200]
    assert slept == [pytest.approx(0.1)]
    assert get(connection, ids[0]).status_code == 200
    assert slept == [pytest.approx(0.1), pytest.approx(0.1)]
