"""Google Calendar's quotas in the sandbox: requests per user per minute (403
userRateLimitExceeded) and per project (429 rateLimitExceeded), in Google's envelope without
Retry-After; a sync that meets the quota defers and then completes."""

from __future__ import annotations

import pytest
import requests

from ingestion.http import RetryPolicy
from sources.models import UserDataSource
from sources.providers.google_calendar.provider import GoogleCalendar
from tests.sources.providers.contracts import google_error_errors
from tests.sources.providers.kit import quota_met_then_freed

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
    quota_met_then_freed(connection, settings, "google_calendar.user=1")
