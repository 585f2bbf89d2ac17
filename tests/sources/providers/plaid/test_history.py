"""How far back a bank's history reaches: chosen on the Link page before the link token is made
(Link's transactions.days_requested, fixed for the Item), then what the first sync fetches from
the sandbox over HTTP."""

from __future__ import annotations

from datetime import timedelta

import pytest
import requests
from django.urls import reverse
from django.utils import timezone

from sources.models import UserDataSource
from sources.providers.plaid import Plaid
from sources.providers.plaid.sandbox.api import LINK_TOKEN_KIND, STORE
from sources.sandbox.store import record_get
from tests.ingestion.conftest import fresh, stored, sync
from tests.sources.browsing import Browser
from tests.sources.conftest import PASSWORD

pytestmark = pytest.mark.django_db(transaction=True)


def link(browser: Browser, days: int | None) -> UserDataSource:
    """The Link page's steps for a new bank with ``days`` chosen (None: left at the default):
    a link token, the sandbox's Link imitation, the exchange."""
    body = {} if days is None else {"backfill_days": days}
    answer = browser.post_json(reverse("sources:link_token", args=[Plaid.id]), body)
    assert answer.status_code == 200, answer.text
    token = answer.json()["link_token"]
    asked = record_get(STORE, LINK_TOKEN_KIND, token).data["days_requested"]
    public = requests.post(
        f"{Plaid.url('api')}/_link/public_token/create",
        json={"link_token": token, "institution_id": "ins_sandbox_first"},
        timeout=30,
    )
    assert public.status_code == 200, public.text
    done = browser.post_json(
        reverse("sources:link_exchange", args=[Plaid.id]),
        {"public_token": public.json()["public_token"], "metadata": {}},
    )
    assert done.status_code == 200, done.text
    connection = UserDataSource.objects.filter(provider=Plaid.id).latest("created_at")
    connection.days_requested = asked
    return connection


def test_the_window_chosen_before_link_is_the_history_plaid_fetches(sandbox, person):
    browser = Browser(sandbox.url)
    browser.log_in(person.username, PASSWORD)
    page = browser.get(reverse("sources:connect", args=[Plaid.id])).text
    assert 'name="backfill_days"' in page and "cannot change later" in page

    short = link(browser, 30)
    assert (short.days_requested, fresh(short).backfill_days) == (30, 30)
    usual = link(browser, None)
    assert usual.days_requested == Plaid.backfill_days_default()
    assert fresh(usual).backfill_days is None
    longest = link(browser, Plaid.max_backfill_days)
    assert longest.days_requested == Plaid.max_backfill_days

    for connection in (short, longest):
        run = sync(connection)
        assert run.outcome == "success", run.error_message
    today = timezone.now().date()

    def dates(connection) -> list:
        return [r["occurred_at"].date() for r in stored(connection)]

    assert dates(short) and min(dates(short)) >= today - timedelta(days=30)
    assert min(dates(longest)) < today - timedelta(days=365)
    # The card says what was fetched and offers no change: Plaid fixed it for the Item.
    cards = browser.get(reverse("sources:connections")).text
    assert reverse("sources:history", args=[short.pk]) not in cards
    assert "2 years (the most available)" in cards


def test_a_reconnect_in_update_mode_asks_for_no_history(sandbox, person):
    browser = Browser(sandbox.url)
    browser.log_in(person.username, PASSWORD)
    connection = link(browser, 30)
    answer = browser.post_json(
        reverse("sources:link_token", args=[Plaid.id]),
        {"connection": str(connection.pk), "backfill_days": 365},
    )
    assert answer.status_code == 200, answer.text
    data = record_get(STORE, LINK_TOKEN_KIND, answer.json()["link_token"]).data
    assert data["item_id"] == connection.external_account_id  # update mode, the same Item
    assert fresh(connection).backfill_days == 30
