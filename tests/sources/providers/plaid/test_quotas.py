"""Plaid's per-Item limits in the sandbox: /transactions/sync and /accounts/get answer 429
RATE_LIMIT_EXCEEDED with the endpoint's code once an Item has spent its minute, other Items
unaffected; plaid-python reads the answer, and a sync that meets the limit defers and then
completes without losing a transaction."""

from __future__ import annotations

import pytest
import requests
from plaid.model.plaid_error import PlaidError

from ingestion.http import RetryPolicy
from ingestion.models import SyncRun
from ingestion.runner import connection_sync
from sources.models import UserDataSource
from sources.providers.plaid.provider import Plaid
from tests.sources.providers.contracts import openapi_model_errors
from tests.sources.providers.kit import quota_met_then_freed, sandbox_connection

pytestmark = pytest.mark.django_db(transaction=True)
NO_WAIT = RetryPolicy(sleep=lambda seconds: None)


def call(connection, endpoint: str, **body) -> requests.Response:
    credentials = UserDataSource.objects.get(pk=connection.pk).credentials
    return requests.post(
        f"{Plaid.url('api')}/{endpoint}",
        json={**Plaid.client_credentials(), "access_token": credentials["access_token"], **body},
        timeout=30,
    )


@pytest.mark.parametrize(
    ("endpoint", "quota", "code"),
    [
        ("transactions/sync", "transactions_sync", "TRANSACTIONS_SYNC_LIMIT"),
        ("accounts/get", "accounts_get", "ACCOUNTS_LIMIT"),
    ],
)
def test_over_the_item_limit_plaid_answers_429(connection, settings, endpoint, quota, code):
    settings.SIBLING_SANDBOX_QUOTAS = f"plaid.{quota}=1"
    assert call(connection, endpoint).status_code == 200
    refused = call(connection, endpoint)
    assert refused.status_code == 429
    body = refused.json()
    assert (body["error_type"], body["error_code"]) == ("RATE_LIMIT_EXCEEDED", code)
    assert body["error_message"] == (
        "rate limit exceeded for attempts to access this item. please try again later"
    )
    assert body["request_id"]
    assert "Retry-After" not in refused.headers
    assert openapi_model_errors(PlaidError, body) == []


def test_items_count_apart(connection, person, settings):
    settings.SIBLING_SANDBOX_QUOTAS = "plaid.accounts_get=1"
    other = sandbox_connection(person, Plaid)
    assert call(connection, "accounts/get").status_code == 200
    assert call(other, "accounts/get").status_code == 200
    assert call(connection, "accounts/get").status_code == 429


def test_a_sync_that_meets_the_limit_defers_and_then_completes(connection, settings):
    settings.SIBLING_SANDBOX_QUOTAS = "plaid.transactions_sync=1"
    first = connection_sync(connection.pk, policy=NO_WAIT)  # one page: one call
    assert first.outcome == SyncRun.Outcome.SUCCESS, first.error_message
    quota_met_then_freed(connection, settings, "plaid.transactions_sync=1")
