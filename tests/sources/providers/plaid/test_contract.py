"""Plaid's sandbox against Plaid's contract: plaid-python's typed models (its OpenAPI schema),
deserialised strictly (types, required fields, enums, and no key the model does not declare),
for every endpoint Sibling and its tests call; and the recorded fixtures against the same
models."""

from __future__ import annotations

import pytest
import requests

from sources.providers.plaid.provider import Plaid
from sources.sandbox.faults import fault_set
from tests.sources.providers.contracts import model_class_for, openapi_model_errors
from tests.sources.providers.kit import fixture, fixture_path


def model(name: str) -> type:
    return model_class_for("plaid", name)


# Each recorded answer and the model of what it records.
ANSWERS = {
    "item_public_token_exchange": "ItemPublicTokenExchangeResponse",
    "link_token_create": "LinkTokenCreateResponse",
    "transactions_sync_empty": "TransactionsSyncResponse",
    "transactions_sync_initial": "TransactionsSyncResponse",
}
# A webhook's model by its webhook_type and webhook_code.
WEBHOOKS = {
    ("ITEM", "ERROR"): "ItemErrorWebhook",
    ("ITEM", "LOGIN_REPAIRED"): "ItemLoginRepairedWebhook",
    ("ITEM", "NEW_ACCOUNTS_AVAILABLE"): "NewAccountsAvailableWebhook",
    ("ITEM", "PENDING_DISCONNECT"): "PendingDisconnectWebhook",
    ("ITEM", "PENDING_EXPIRATION"): "PendingExpirationWebhook",
    ("ITEM", "USER_PERMISSION_REVOKED"): "UserPermissionRevokedWebhook",
    ("ITEM", "WEBHOOK_UPDATE_ACKNOWLEDGED"): "WebhookUpdateAcknowledgedWebhook",
    ("TRANSACTIONS", "SYNC_UPDATES_AVAILABLE"): "SyncUpdatesAvailableWebhook",
    ("TRANSACTIONS", "INITIAL_UPDATE"): "InitialUpdateWebhook",
    ("TRANSACTIONS", "HISTORICAL_UPDATE"): "HistoricalUpdateWebhook",
    ("TRANSACTIONS", "DEFAULT_UPDATE"): "DefaultUpdateWebhook",
    ("TRANSACTIONS", "TRANSACTIONS_REMOVED"): "TransactionsRemovedWebhook",
}
FIXTURES = sorted(p.stem for p in fixture_path("plaid", "x").parent.glob("*.json"))


def fixture_model(name: str, body: dict) -> str:
    """The model a fixture is checked against: an error is Plaid's error object, a webhook the
    model of its type and code, an answer the one its endpoint answers with."""
    if name.startswith("error_"):
        return "PlaidError"
    if name.startswith("webhook_"):
        return WEBHOOKS[(body.get("webhook_type"), body.get("webhook_code"))]
    return ANSWERS[name]


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_keeps_the_contract(name):
    body = fixture("plaid", name)
    assert openapi_model_errors(model(fixture_model(name, body)), body) == []


def test_the_strict_check_refuses_what_the_sdk_would_let_pass():
    body = fixture("plaid", "transactions_sync_empty")
    sync = model("TransactionsSyncResponse")
    assert openapi_model_errors(sync, {**body, "surprise": 1}) == [
        "TransactionsSyncResponse.surprise: not in the contract"
    ]
    assert openapi_model_errors(sync, {**body, "has_more": "no"})
    assert openapi_model_errors(sync, {**body, "transactions_update_status": "SOON"})
    assert openapi_model_errors(sync, {k: v for k, v in body.items() if k != "next_cursor"})


@pytest.mark.django_db(transaction=True)
def test_every_endpoint_answers_as_plaid_python_models_it(sandbox, settings):
    # One Item for every call: each answer is checked, and every drift reported at once.
    settings.SIBLING_SANDBOX_RECENT_READY_S = 3600  # the Item stays NOT_READY until told
    api = Plaid.url("api")
    client = Plaid.client_credentials()
    errors: list[str] = []

    def call(path: str, name: str, body: dict, status: int = 200) -> dict:
        answer = requests.post(f"{api}/{path}", json={**client, **body}, timeout=30)
        assert answer.status_code == status, (path, answer.status_code, answer.text[:300])
        payload = answer.json()
        errors.extend(f"/{path}: {e}" for e in openapi_model_errors(model(name), payload))
        return payload

    call(
        "link/token/create",
        "LinkTokenCreateResponse",
        {
            "client_name": "Sibling",
            "language": "en",
            "country_codes": ["US", "GB"],
            "user": {"client_user_id": "person-1"},
            "products": ["transactions"],
            "transactions": {"days_requested": 30},
            "webhook": "https://example.com/webhooks/",
        },
    )
    public = call(
        "sandbox/public_token/create",
        "SandboxPublicTokenCreateResponse",
        {
            "institution_id": "ins_sandbox_first",
            "initial_products": ["transactions"],
            "options": {
                "transactions": {"days_requested": 30},
                "webhook": f"{sandbox.url}/webhooks/plaid/",
            },
        },
    )
    item = call(
        "item/public_token/exchange",
        "ItemPublicTokenExchangeResponse",
        {"public_token": public["public_token"]},
    )
    token = {"access_token": item["access_token"]}
    call("item/get", "ItemGetResponse", token)
    call("accounts/get", "AccountsGetResponse", token)
    call(
        "item/webhook/update",
        "ItemWebhookUpdateResponse",
        {**token, "webhook": f"{sandbox.url}/webhooks/plaid/"},
    )

    sync = "TransactionsSyncResponse"
    page = call("transactions/sync", sync, {**token, "count": 500})
    assert page["transactions_update_status"] == "NOT_READY"
    fault_set("plaid", item["item_id"], "initial_update")
    page = call("transactions/sync", sync, {**token, "count": 500})
    assert page["transactions_update_status"] == "INITIAL_UPDATE_COMPLETE"
    fault_set("plaid", item["item_id"], "historical_update")
    page = call("transactions/sync", sync, {**token, "count": 100})
    assert page["transactions_update_status"] == "HISTORICAL_UPDATE_COMPLETE"
    while page["has_more"]:
        page = call(
            "transactions/sync", sync, {**token, "count": 100, "cursor": page["next_cursor"]}
        )
    fault_set("plaid", item["item_id"], "new_activity")
    changed = call("transactions/sync", sync, {**token, "cursor": page["next_cursor"]})
    assert changed["modified"] and changed["removed"], "no changes to check"

    call(
        "sandbox/item/fire_webhook",
        "SandboxItemFireWebhookResponse",
        {**token, "webhook_code": "SYNC_UPDATES_AVAILABLE"},
    )
    key = requests.post(
        f"{api}/webhook_verification_key/get", json={**client, "key_id": "unknown"}, timeout=30
    )
    errors.extend(openapi_model_errors(model("PlaidError"), key.json()))
    for fault, status in (("rate_limit", 429), ("server_error", 500)):
        fault_set("plaid", item["item_id"], fault)
        call("accounts/get", "PlaidError", token, status=status)
    call("sandbox/item/reset_login", "SandboxItemResetLoginResponse", token)
    call("accounts/get", "PlaidError", token, status=400)  # ITEM_LOGIN_REQUIRED
    call("no/such/endpoint", "PlaidError", {}, status=404)
    call("item/remove", "ItemRemoveResponse", token)
    call("item/get", "PlaidError", token, status=400)  # the access token is gone
    assert errors == []


@pytest.mark.parametrize("kind", WEBHOOKS, ids="/".join)
def test_every_webhook_the_sandbox_sends_keeps_the_contract(kind):
    from sources.providers.plaid.sandbox.webhooks import plaid_webhook_body

    body = plaid_webhook_body("item-1", *kind)
    assert openapi_model_errors(model(WEBHOOKS[kind]), body) == []


@pytest.mark.django_db(transaction=True)
def test_the_webhook_verification_key_answers_as_plaid_python_models_it(sandbox):
    from sources.providers.plaid.sandbox.api import webhook_signing_key

    kid, _ = webhook_signing_key()
    answer = requests.post(
        f"{Plaid.url('api')}/webhook_verification_key/get",
        json={**Plaid.client_credentials(), "key_id": kid},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    assert openapi_model_errors(model("WebhookVerificationKeyGetResponse"), answer.json()) == []
