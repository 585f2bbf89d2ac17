"""The Plaid client, processor and webhook-key fetch against Plaid's real sandbox
(https://sandbox.plaid.com), for someone with Plaid sandbox keys:

    PLAID_CLIENT_ID=... PLAID_SECRET=... make test-plaid-live

Marked ``live``: never part of ``make test``, and skipped when the keys are not set. Items are
made with /sandbox/public_token/create at Plaid (institution ins_109508, "First Platypus Bank")
and removed at the end of each test.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
import requests

from ingestion.models import RawPage, SyncRun
from sources.models import UserDataSource
from sources.providers.plaid import Plaid
from sources.providers.plaid import webhooks as plaid_webhooks
from sources.providers.plaid.processors import page_process
from sources.services import connection_upsert
from tests.ingestion.conftest import fresh, stored, sync

pytestmark = [
    pytest.mark.live,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not (os.environ.get("PLAID_CLIENT_ID") and os.environ.get("PLAID_SECRET")),
        reason="PLAID_CLIENT_ID and PLAID_SECRET are not set",
    ),
]
SANDBOX_URL = os.environ.get("PLAID_LIVE_URL", "https://sandbox.plaid.com")
INSTITUTION = "ins_109508"
Outcome = SyncRun.Outcome
Status = UserDataSource.Status


@pytest.fixture
def real_plaid(settings) -> type[Plaid]:
    """Plaid itself (its sandbox environment), with the keys from the environment."""
    credentials = {"client_id": os.environ["PLAID_CLIENT_ID"], "secret": os.environ["PLAID_SECRET"]}
    settings.SIBLING_PROVIDERS = {
        **settings.SIBLING_PROVIDERS,
        Plaid.id: {"sandbox": False, "credentials": credentials, "urls": {"api": SANDBOX_URL}},
    }
    return Plaid


@pytest.fixture
def item(real_plaid) -> Iterator[dict[str, str]]:
    public = requests.post(
        f"{SANDBOX_URL}/sandbox/public_token/create",
        json={
            **real_plaid.client_credentials(),
            "institution_id": INSTITUTION,
            "initial_products": ["transactions"],
            "options": {"transactions": {"days_requested": 30}},
        },
        timeout=30,
    )
    assert public.status_code == 200, public.text
    exchanged = real_plaid.public_token_exchange(public.json()["public_token"])
    yield exchanged
    from sources.providers.base import RevocationToken

    real_plaid.revoke_token(RevocationToken(exchanged["access_token"], "access_token"))


@pytest.fixture
def connection(item, person, real_plaid) -> UserDataSource:
    return connection_upsert(
        user=person,
        provider=real_plaid,
        external_account_id=item["item_id"],
        credentials=item,
        account_label="First Platypus Bank",
    )


def sync_until_ready(connection: UserDataSource, attempts: int = 30) -> SyncRun:
    """Sync as the worker does; while Plaid prepares the Item (a deferred run), again."""
    for _ in range(attempts):
        run = sync(connection)
        if run.outcome != Outcome.DEFERRED:
            return run
        assert not stored(connection, "external_data")  # nothing while NOT_READY
        time.sleep(2)
    pytest.fail("Plaid's sandbox did not prepare the Item")


def test_the_client_syncs_a_real_sandbox_item_and_the_processor_reads_every_page(connection):
    run = sync_until_ready(connection)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    records = stored(connection, "external_data")
    assert records and fresh(connection).cursors["transactions"]
    for raw in RawPage.objects.filter(connection=connection):
        processed = page_process("transactions", raw.payload)
        assert not processed.quarantined
    again = sync(connection)
    assert again.outcome == Outcome.SUCCESS and again.api_calls >= 1


def test_a_reset_login_asks_the_person_to_reconnect_and_update_mode_opens(
    connection, item, real_plaid
):
    reset = requests.post(
        f"{SANDBOX_URL}/sandbox/item/reset_login",
        json={**real_plaid.client_credentials(), "access_token": item["access_token"]},
        timeout=30,
    )
    assert reset.status_code == 200 and reset.json()["reset_login"] is True
    run = sync(connection)
    assert run.outcome == Outcome.FAILED
    assert fresh(connection).status == Status.REAUTH_REQUIRED
    token = real_plaid.link_token_create(client_user_id="live-test", credentials=item)
    assert token.startswith("link-sandbox-")


def test_webhook_verification_fetches_plaids_keys(real_plaid, settings):
    # A kid Plaid never issued: Plaid answers 400, which is "unknown", not an outage.
    assert plaid_webhooks.verification_key("sibling-live-test-unknown-kid") is None
