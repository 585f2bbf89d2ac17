"""The sandbox's Plaid: the API and Link (api.py), its signed webhooks (webhooks.py), and what
the shared sandbox reads from an imitation (urlpatterns, faults, webhook controls).

Faults, addressed by item_id: `revoke` makes the item need a new login (ITEM_LOGIN_REQUIRED)
until update-mode Link or `fault_clear`; `new_activity` adds `count` steps of new, changed and
removed transactions, then sends SYNC_UPDATES_AVAILABLE to the item's webhook URL (best effort);
`plaid_mutation` makes the next /transactions/sync call that continues a pagination loop fail
with TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION.
"""

from __future__ import annotations

import requests
from django.urls import path

from sources.providers.plaid.provider import Plaid
from sources.sandbox.store import activity_tick_add
from sources.sandbox.webhooks import WebhookInputError, activity_webhook_send, flag, text

from . import api
from .api import STORE, item_by_id
from .webhooks import plaid_webhook_send

fault_names = ("new_activity", "plaid_mutation")


def fault_apply(account: str, fault: str, count: int) -> bool:
    if fault == "revoke":
        item = item_by_id(account, removed=None)
        if item is not None:
            item.update(login_required=True)
        return True
    if fault == "new_activity":
        for _ in range(count):
            activity_tick_add(STORE, account)
        activity_webhook_send(lambda: activity_webhook(account))
        return True
    return False


def fault_undo(account: str, fault: str | None) -> None:
    if fault in (None, "revoke"):
        item = item_by_id(account, removed=None)
        if item is not None:
            item.update(login_required=False)


def activity_webhook(item_id: str) -> list[int] | None:
    """SYNC_UPDATES_AVAILABLE to the item's webhook URL, when it has one."""
    item = item_by_id(item_id)
    if item is None or not item.webhook:
        return None
    return plaid_webhook_send(
        item.item_id, "TRANSACTIONS", "SYNC_UPDATES_AVAILABLE", url=item.webhook
    )


def _control_send(body: dict, url: str) -> dict:
    """`item_id` (required, a sandbox item), `webhook_type` (default "TRANSACTIONS"),
    `webhook_code` (default "SYNC_UPDATES_AVAILABLE"), `fields` (object merged into the body,
    e.g. `{"error": "ITEM_LOGIN_REQUIRED"}`), `duplicate` (bool)."""
    item_id = text(body, "item_id")
    if item_by_id(item_id, removed=None) is None:
        raise WebhookInputError(f"unknown Plaid item {item_id!r}")
    fields = body.get("fields") or {}
    if not isinstance(fields, dict):
        raise WebhookInputError("fields must be an object")
    reserved = sorted({"url", "duplicate", "retry_delays"} & set(fields))
    if reserved:
        raise WebhookInputError(f"fields cannot set {', '.join(reserved)}")
    statuses = plaid_webhook_send(
        item_id,
        text(body, "webhook_type", "TRANSACTIONS"),
        text(body, "webhook_code", "SYNC_UPDATES_AVAILABLE"),
        url=url,
        duplicate=flag(body, "duplicate"),
        **fields,
    )
    return {"statuses": statuses}


webhook_controls = {"send": _control_send}


def plaid_item_link(*, client_user_id: str, institution_id: str = "ins_sandbox_first") -> dict:
    """A new sandbox bank through Link, as a person's browser makes it (for tests and
    benchmarks): {"access_token", "item_id"}."""
    link_token = Plaid.link_token_create(client_user_id=client_user_id)
    public = requests.post(
        f"{Plaid.url('api')}/link/public_token/create",
        json={"link_token": link_token, "institution_id": institution_id},
        timeout=30,
    )
    public.raise_for_status()
    return Plaid.public_token_exchange(public.json()["public_token"])


urlpatterns = [
    path("plaid/link-initialize.js", api.link_script, name="plaid-link-script"),
    path("plaid/link/token/create", api.link_token_create, name="plaid-link-token-create"),
    path(
        "plaid/link/public_token/create",
        api.link_public_token_create,
        name="plaid-link-public-token-create",
    ),
    path(
        "plaid/item/public_token/exchange",
        api.item_public_token_exchange,
        name="plaid-public-token-exchange",
    ),
    path("plaid/item/get", api.item_get, name="plaid-item-get"),
    path("plaid/item/remove", api.item_remove, name="plaid-item-remove"),
    path("plaid/item/webhook/update", api.item_webhook_update, name="plaid-webhook-update"),
    path("plaid/accounts/get", api.accounts_get, name="plaid-accounts-get"),
    path("plaid/transactions/sync", api.transactions_sync, name="plaid-transactions-sync"),
    path(
        "plaid/webhook_verification_key/get",
        api.webhook_verification_key_get,
        name="plaid-webhook-verification-key-get",
    ),
]
