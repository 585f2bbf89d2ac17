"""Plaid's budgets: plaid-python calls through urllib3, so the client charges /transactions/sync
itself, before each attempt, per Item and for the client."""

import pytest

from ingestion.budgets import budgets_in_force
from ingestion.models import BudgetBucket, SyncRun
from sources.providers.plaid import Plaid
from tests.ingestion.conftest import fresh, sync

pytestmark = pytest.mark.django_db(transaction=True)
Outcome = SyncRun.Outcome


def test_the_documented_transactions_sync_limits():
    budgets = {b.name: b for b in budgets_in_force(Plaid)}
    assert (budgets["item_sync"].limit, budgets["item_sync"].per) == (50, "account")
    assert (budgets["client_sync"].limit, budgets["client_sync"].per) == (2_500, "app")
    assert budgets["item_sync"].cost("transactions/sync") == 1
    assert budgets["item_sync"].cost("accounts/get") == 0  # counted by another limit


def test_every_transactions_sync_is_charged_and_a_spent_item_defers(connection, settings):
    settings.SIBLING_BUDGETS = True
    run = sync(connection)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    item = BudgetBucket.objects.get(provider="plaid", budget="item_sync")
    client = BudgetBucket.objects.get(provider="plaid", budget="client_sync")
    assert item.units == client.units == run.api_calls

    # One call a minute for the Item, none waited in place: the next sync is put off to the
    # refill before Plaid is called at all.
    settings.PLAID_BUDGET_ITEM_SYNC = 1
    settings.SIBLING_BUDGET_MAX_WAIT_S = 0
    sync(connection)
    deferred = sync(connection)
    assert deferred.outcome == Outcome.DEFERRED and deferred.api_calls == 0
    assert "item_sync budget" in deferred.error_message
    assert fresh(connection).next_sync_at > deferred.started_at
    assert BudgetBucket.objects.get(pk=client.pk).deferrals == 0
