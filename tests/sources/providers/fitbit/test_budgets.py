"""Google Health's budgets against the sandbox enforcing the same quota: a sync runs up to it
and is deferred, never refused; without budgets the same quota answers 429."""

import pytest

from ingestion.budgets import budgets_in_force
from ingestion.models import BudgetBucket, SyncRun
from sources.providers.fitbit.provider import Fitbit
from tests.ingestion.conftest import sync

pytestmark = pytest.mark.django_db(transaction=True)
Outcome = SyncRun.Outcome


def test_the_documented_requests_per_user_and_per_project():
    budgets = {b.name: (b.limit, b.window_s, b.per) for b in budgets_in_force(Fitbit)}
    assert budgets == {"user": (300, 60, "account"), "project": (120_000, 60, "app")}


def test_at_the_quota_a_sync_is_deferred_never_refused(connection, settings):
    settings.SIBLING_SANDBOX_QUOTAS = "fitbit.user=3"
    settings.FITBIT_BUDGET_USER = 3
    settings.SIBLING_BUDGETS = True
    settings.SIBLING_BUDGET_MAX_WAIT_S = 0
    run = sync(connection)
    assert run.outcome == Outcome.DEFERRED, run.error_message
    assert run.api_calls >= 1 and run.rate_limited == 0
    assert "user budget" in run.error_message
    user = BudgetBucket.objects.get(provider="fitbit", budget="user")
    assert user.units == run.api_calls and user.rate_limited == 0

    # The same quota, nothing charged beforehand: the sandbox refuses (as Google does).
    settings.SIBLING_BUDGETS = False
    refused = sync(connection)
    assert refused.outcome == Outcome.DEFERRED and refused.rate_limited >= 1
