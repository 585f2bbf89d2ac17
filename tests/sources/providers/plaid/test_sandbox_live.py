"""Real HTTP against the Plaid sandbox: plaid-python (urllib3), as the client talks."""

import plaid
import pytest
from plaid.api import plaid_api
from plaid.model.accounts_get_request import AccountsGetRequest
from plaid.model.country_code import CountryCode
from plaid.model.item_get_request import ItemGetRequest
from plaid.model.item_public_token_exchange_request import ItemPublicTokenExchangeRequest
from plaid.model.link_token_create_request import LinkTokenCreateRequest
from plaid.model.link_token_create_request_user import LinkTokenCreateRequestUser
from plaid.model.products import Products
from plaid.model.sandbox_public_token_create_request import SandboxPublicTokenCreateRequest
from plaid.model.sandbox_public_token_create_request_options import (
    SandboxPublicTokenCreateRequestOptions,
)
from plaid.model.sandbox_public_token_create_request_options_transactions import (
    SandboxPublicTokenCreateRequestOptionsTransactions,
)
from plaid.model.transactions_sync_request import TransactionsSyncRequest
from plaid.model.webhook_verification_key_get_request import WebhookVerificationKeyGetRequest

from sources.providers.plaid.sandbox.api import webhook_signing_key
from sources.sandbox.faults import fault_set


@pytest.fixture
def plaid_client(live_server):
    configuration = plaid.Configuration(
        host=live_server.url + "/sandbox/plaid",
        api_key={
            "clientId": "sandbox-plaid-client",
            "secret": "sandbox-plaid-secret",
            "plaidVersion": "2020-09-14",
        },
    )
    return plaid_api.PlaidApi(plaid.ApiClient(configuration))


def sync_to_end(api, access_token, cursor=None):
    added = modified = removed = 0
    while True:
        kwargs = {"access_token": access_token, "count": 500}
        if cursor:
            kwargs["cursor"] = cursor
        page = api.transactions_sync(TransactionsSyncRequest(**kwargs))
        added += len(page.added)
        modified += len(page.modified)
        removed += len(page.removed)
        cursor = page.next_cursor
        if not page.has_more:
            return added, modified, removed, cursor


def test_plaid_python_deserialises_every_response(live_server, plaid_client):
    link = plaid_client.link_token_create(
        LinkTokenCreateRequest(
            client_name="Sibling",
            language="en",
            country_codes=[CountryCode("US")],
            user=LinkTokenCreateRequestUser(client_user_id="person-1"),
            products=[Products("transactions")],
            webhook="https://example.com/webhooks/plaid/",
        )
    )
    assert link.link_token
    public = plaid_client.sandbox_public_token_create(
        SandboxPublicTokenCreateRequest(
            institution_id="ins_sandbox_first",
            initial_products=[Products("transactions")],
            options=SandboxPublicTokenCreateRequestOptions(
                webhook="https://example.com/webhooks/plaid/",
                transactions=SandboxPublicTokenCreateRequestOptionsTransactions(days_requested=182),
            ),
        )
    )
    exchanged = plaid_client.item_public_token_exchange(
        ItemPublicTokenExchangeRequest(public_token=public.public_token)
    )
    token = exchanged.access_token
    item = plaid_client.item_get(ItemGetRequest(access_token=token))
    assert item.item.item_id == exchanged.item_id
    accounts = plaid_client.accounts_get(AccountsGetRequest(access_token=token))
    assert len(accounts.accounts) == 3

    added, modified, removed, cursor = sync_to_end(plaid_client, token)
    assert added > 300 and modified == removed == 0
    fault_set("plaid", exchanged.item_id, "new_activity")
    added, modified, removed, _ = sync_to_end(plaid_client, token, cursor)
    assert added >= 3 and modified == 2 and removed >= 1

    kid, _ = webhook_signing_key()
    key = plaid_client.webhook_verification_key_get(WebhookVerificationKeyGetRequest(key_id=kid))
    assert key.key.alg == "ES256"

    fault_set("plaid", exchanged.item_id, "revoke")
    with pytest.raises(plaid.ApiException) as raised:
        plaid_client.accounts_get(AccountsGetRequest(access_token=token))
    assert raised.value.status == 400 and "ITEM_LOGIN_REQUIRED" in raised.value.body
