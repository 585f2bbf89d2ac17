"""Google Health's quotas in the sandbox: requests per user (and per project) per minute, over
which the API answers 429 RESOURCE_EXHAUSTED in Google's envelope, without Retry-After; a sync
that meets the quota defers and then completes."""

from __future__ import annotations

import pytest
import requests

from ingestion.http import RetryPolicy
from sources.models import UserDataSource
from sources.providers.fitbit.provider import Fitbit
from tests.sources.providers.contracts import google_error_errors
from tests.sources.providers.kit import quota_met_then_freed

pytestmark = pytest.mark.django_db(transaction=True)
NO_WAIT = RetryPolicy(sleep=lambda seconds: None)


def identity(connection) -> requests.Response:
    token = UserDataSource.objects.get(pk=connection.pk).credentials["access_token"]
    return requests.get(
        f"{Fitbit.url('api')}/users/me/identity",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


@pytest.mark.parametrize("quota", ["user", "project"])
def test_over_the_quota_the_api_answers_429_resource_exhausted(connection, settings, quota):
    settings.SIBLING_SANDBOX_QUOTAS = f"fitbit.{quota}=2"
    assert [identity(connection).status_code for _ in range(2)] == [200, 200]
    refused = identity(connection)
    assert refused.status_code == 429
    assert google_error_errors(refused.json()) == []
    assert refused.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert "Retry-After" not in refused.headers


def test_the_family_override_applies_and_off_never_refuses(connection, settings):
    settings.SIBLING_SANDBOX_QUOTAS = "google.user=1"
    assert [identity(connection).status_code for _ in range(2)] == [200, 429]
    settings.SIBLING_SANDBOX_QUOTAS = "off"
    assert identity(connection).status_code == 200


def test_a_sync_that_meets_the_quota_defers_and_then_completes(connection, settings):
    quota_met_then_freed(connection, settings, "fitbit.user=2")
