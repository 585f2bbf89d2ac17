"""A new Item is not ready at once, as at Plaid: /transactions/sync first answers NOT_READY with
an empty cursor, then the recent 30 days (INITIAL_UPDATE_COMPLETE), then the whole history asked
for (HISTORICAL_UPDATE_COMPLETE). A person sees that their bank is preparing, nothing is stored
meanwhile, and the sync asks again soon."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from ingestion.models import RawPage, SyncRun
from sources.providers.plaid.client import PREPARING, PREPARING_OLDER
from tests.ingestion.conftest import fresh, stored, sync
from tests.sources.providers.kit import sandbox_connection, sandbox_fault

from .conftest import plaid_link, plaid_post

pytestmark = pytest.mark.django_db(transaction=True)
Outcome = SyncRun.Outcome


@pytest.fixture
def slow_bank(settings):
    """Sandbox banks that take an hour to prepare a new Item (the tests move them on)."""
    settings.SIBLING_SANDBOX_RECENT_READY_S = 3600
    settings.SIBLING_SANDBOX_HISTORY_READY_S = 3600


def sync_page(client, token: str, cursor: str = "") -> dict:
    body = {"access_token": token, "count": 500, **({"cursor": cursor} if cursor else {})}
    answer = plaid_post(client, "transactions/sync", body)
    assert answer.status_code == 200, answer.content
    return answer.json()


def test_the_sandbox_moves_a_new_item_through_plaids_update_states(client, slow_bank):
    item = plaid_link(client, days_requested=120)
    first = sync_page(client, item["access_token"])
    assert first["transactions_update_status"] == "NOT_READY"
    assert first["next_cursor"] == "" and not first["has_more"]
    assert first["added"] == first["modified"] == first["removed"] == []

    sandbox_fault_item(client, item["item_id"], "initial_update")
    recent = sync_page(client, item["access_token"])
    assert recent["transactions_update_status"] == "INITIAL_UPDATE_COMPLETE"
    linked = date.today()
    recent_days = {date.fromisoformat(t["date"]) for t in recent["added"]}
    assert recent_days and min(recent_days) >= linked - timedelta(days=29)

    sandbox_fault_item(client, item["item_id"], "historical_update")
    older = sync_page(client, item["access_token"], recent["next_cursor"])
    assert older["transactions_update_status"] == "HISTORICAL_UPDATE_COMPLETE"
    older_days = {date.fromisoformat(t["date"]) for t in older["added"]}
    # The older days only, added to what the client already has; the 120 days asked for.
    assert older_days and max(older_days) < linked - timedelta(days=29)
    assert min(older_days) >= linked - timedelta(days=119)
    assert not {t["transaction_id"] for t in older["added"]} & {
        t["transaction_id"] for t in recent["added"]
    }


def sandbox_fault_item(client, item_id: str, fault: str) -> None:
    answer = client.post(
        "/sandbox/_faults",
        {"provider": "plaid", "account": item_id, "fault": fault},
        content_type="application/json",
    )
    assert answer.status_code == 200, answer.content


@pytest.mark.parametrize("days", [14, 182])
def test_days_requested_is_the_history_the_item_holds(client, days):
    item = plaid_link(client, days_requested=days)
    body = sync_page(client, item["access_token"])
    while body["has_more"]:
        body = sync_page(client, item["access_token"], body["next_cursor"])
    everything = sync_page(client, item["access_token"])  # from no cursor: the whole history
    oldest = date.today() - timedelta(days=days - 1)
    days_seen = set()
    body = everything
    while True:
        days_seen |= {date.fromisoformat(t["date"]) for t in body["added"]}
        if not body["has_more"]:
            break
        body = sync_page(client, item["access_token"], body["next_cursor"])
    assert min(days_seen) >= oldest and min(days_seen) <= oldest + timedelta(days=5)


@pytest.fixture
def preparing(slow_bank, sandbox, person, provider, settings):
    """A person's new bank connection, for 60 days of history, whose Item Plaid is still
    preparing (its webhooks are left out: the syncs here run by hand)."""
    settings.SIBLING_BACKFILL_DAYS = 60
    settings.SIBLING_SANDBOX_SEND_WEBHOOKS = False
    return sandbox_connection(person, provider)


def test_a_person_sees_their_bank_preparing_then_their_history(preparing, client, person):
    connection = preparing
    run = sync(connection)
    assert run.outcome == Outcome.DEFERRED
    after = fresh(connection)
    # Nothing stored, no cursor kept (an empty one would restart the history), asked again soon.
    assert stored(connection, "external_data") == []
    assert not RawPage.objects.filter(connection=connection).exists()
    assert not after.cursors.get("transactions")
    assert after.notice == PREPARING
    assert timezone.now() < after.next_sync_at <= timezone.now() + timedelta(minutes=5)

    client.force_login(person, backend="django.contrib.auth.backends.ModelBackend")
    page = client.get(reverse("sources:connections")).content.decode()
    assert "Your bank is preparing your history" in page

    sandbox_fault(connection, "initial_update")
    run = sync(connection)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    recent = stored(connection, "external_data")
    assert recent and fresh(connection).cursors["transactions"]
    after = fresh(connection)
    assert after.notice == PREPARING_OLDER
    assert after.next_sync_at <= timezone.now() + timedelta(minutes=5)  # soon, not in 6 hours

    sandbox_fault(connection, "historical_update")
    run = sync(connection)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    assert run.created > 0
    after = fresh(connection)
    assert len(stored(connection, "external_data")) == after.records_stored > len(recent)
    assert after.notice == ""
    page = client.get(reverse("sources:connections")).content.decode()
    assert "preparing" not in page


def test_a_notice_of_another_kind_is_left_alone_while_the_bank_prepares(preparing):
    from ingestion.notifications import connection_notice

    connection_notice(preparing, "Your bank will soon stop sharing data with Sibling.")
    sync(preparing)
    assert fresh(preparing).notice == "Your bank will soon stop sharing data with Sibling."
