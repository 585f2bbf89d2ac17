"""Google Calendar's quotas in the sandbox: requests per user per minute (403
userRateLimitExceeded) and per project (429 rateLimitExceeded), in Google's envelope without
Retry-After; a sync that meets the quota defers and then completes."""

from __future__ import annotations

import pytest
import requests
from django.utils import timezone

from ingestion.http import RetryPolicy
from ingestion.models import SyncRun
from ingestion.runner import connection_sync
from sources.models import UserDataSource
from sources.providers.google_calendar.provider import GoogleCalendar
from tests.sources.providers.contracts import google_error_errors

pytestmark = pytest.mark.django_db(transaction=True)
NO_WAIT = RetryPolicy(sleep=lambda seconds: None)


def calendar_list(connection) -> requests.Response:
    token = UserDataSource.objects.get(pk=connection.pk).credentials["access_token"]
    return requests.get(
        f"{GoogleCalendar.url('api')}/users/me/calendarList",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


@pytest.mark.parametrize(
    ("quota", "status", "reason"),
    [("user", 403, "userRateLimitExceeded"), ("project", 429, "rateLimitExceeded")],
)
def test_over_the_quota_calendar_answers_as_google(connection, settings, quota, status, reason):
    settings.SIBLING_SANDBOX_QUOTAS = f"google_calendar.{quota}=1"
    assert calendar_list(connection).status_code == 200
    refused = calendar_list(connection)
    assert refused.status_code == status
    assert google_error_errors(refused.json()) == []
    assert refused.json()["error"]["errors"][0]["reason"] == reason
    assert refused.json()["error"]["errors"][0]["domain"] == "usageLimits"
    assert "Retry-After" not in refused.headers


def test_a_sync_that_meets_the_quota_defers_and_then_completes(connection, settings):
    settings.SIBLING_SANDBOX_QUOTAS = "google_calendar.user=1"
    run = connection_sync(connection.pk, policy=NO_WAIT)
    assert run.outcome == SyncRun.Outcome.DEFERRED, run.error_message
    fresh = UserDataSource.objects.get(pk=connection.pk)
    assert fresh.next_sync_at > timezone.now()
    assert fresh.status == UserDataSource.Status.ACTIVE
    settings.SIBLING_SANDBOX_QUOTAS = "off"
    run = connection_sync(connection.pk, policy=NO_WAIT)
    assert run.outcome == SyncRun.Outcome.SUCCESS, run.error_message
