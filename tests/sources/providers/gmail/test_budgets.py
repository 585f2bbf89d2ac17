"""Gmail's budgets: the quota table its Google project has (GMAIL_QUOTA_TABLE) sets the per-user
limit and the method costs; GMAIL_BUDGET_<NAME> overrides a limit; a sync charges them."""

from __future__ import annotations

import environ
import pytest
from django.core.exceptions import ImproperlyConfigured

from ingestion.budgets import budgets_in_force
from ingestion.models import BudgetBucket, SyncRun
from sources.providers.config import settings_from_environment
from sources.providers.gmail.provider import Gmail
from tests.sources.providers.gmail.test_sync import (  # noqa: F401  (fixtures)
    gmail_connection,
    gmail_sandbox,
    stored,
    sync,
)


def in_force(settings, table: str | None = None) -> dict:
    if table is not None:
        settings.GMAIL_QUOTA_TABLE = table
    return {b.name: b for b in budgets_in_force(Gmail)}


def test_projects_since_may_2026_get_6000_units_with_messages_get_at_20(settings):
    budgets = in_force(settings)
    user, project = budgets["user"], budgets["project"]
    assert (user.limit, user.window_s, user.per) == (6_000, 60, "account")
    assert (project.limit, project.window_s, project.per) == (1_200_000, 60, "app")
    assert user.cost("messages.get", 50) == 1_000 and user.cost("messages.list") == 5
    assert user.cost("history.list") == 2 and user.cost("getProfile") == 1
    assert project.cost("messages.get") == 20


def test_the_legacy_table_gives_15000_units_with_messages_get_at_5(settings):
    budgets = in_force(settings, "legacy")
    assert budgets["user"].limit == 15_000 and budgets["project"].limit == 1_200_000
    assert budgets["user"].cost("messages.get", 50) == 250
    assert budgets["user"].cost("messages.list") == 5


def test_a_budget_setting_overrides_the_tables_limit_not_its_costs(settings):
    settings.GMAIL_BUDGET_USER = 100_000
    budgets = in_force(settings, "legacy")
    assert budgets["user"].limit == 100_000 and budgets["user"].cost("messages.get") == 5


def env_of(**variables: str) -> environ.Env:
    env = environ.Env()
    env.ENVIRON = dict(variables)
    return env


def test_the_environment_names_the_table_and_the_limits():
    built = settings_from_environment(
        env_of(GMAIL_QUOTA_TABLE="legacy", GMAIL_BUDGET_USER="100000"),
        sandbox_allowed=True,
        providers=[Gmail],
    )
    assert built["GMAIL_QUOTA_TABLE"] == "legacy"
    assert (built["GMAIL_BUDGET_USER"], built["GMAIL_BUDGET_PROJECT"]) == (100_000, None)
    defaults = settings_from_environment(env_of(), sandbox_allowed=True, providers=[Gmail])
    assert defaults["GMAIL_QUOTA_TABLE"] == "2026" and defaults["GMAIL_BUDGET_USER"] is None


@pytest.mark.parametrize("variables", [{"GMAIL_BUDGET_USER": "0"}, {"GMAIL_BUDGET_USER": "lots"}])
def test_a_bad_limit_stops_the_start_with_its_name(variables):
    with pytest.raises(ImproperlyConfigured, match=next(iter(variables))):
        settings_from_environment(env_of(**variables), sandbox_allowed=True, providers=[Gmail])


def test_an_unknown_table_is_named_not_guessed(settings):
    with pytest.raises(ImproperlyConfigured, match="GMAIL_QUOTA_TABLE"):
        in_force(settings, "2025")


@pytest.mark.django_db
def test_a_sync_charges_each_message_read_at_the_tables_cost(
    gmail_connection,  # noqa: F811  (the fixture imported above)
    settings,
):
    settings.SIBLING_BUDGETS = True
    run = sync(gmail_connection)
    assert run.outcome == SyncRun.Outcome.SUCCESS, run.error_message
    messages = len(stored(gmail_connection))
    assert messages > 0
    user = BudgetBucket.objects.get(provider="gmail", budget="user")
    project = BudgetBucket.objects.get(provider="gmail", budget="project")
    assert user.units == project.units
    # Every message read in a batch costs messages.get's 20 units, the other calls (profile,
    # lists) at most 5 each; nothing was refused.
    assert 20 * messages <= user.units <= 20 * messages + 5 * run.api_calls
    assert (user.rate_limited, user.deferrals, run.rate_limited) == (0, 0, 0)


@pytest.mark.django_db
def test_the_dashboard_names_an_unknown_table_instead_of_failing(client, settings):
    from django.urls import reverse

    from tests.factories import UserFactory

    settings.GMAIL_QUOTA_TABLE = "2025"
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    page = client.get(reverse("sync_dashboard"))
    assert page.status_code == 200
    assert "Not in force: GMAIL_QUOTA_TABLE must be one of 2026, legacy" in page.content.decode()
