"""The sandbox's Plaid: the API and Link (api.py), its signed webhooks (webhooks.py), and what
the shared sandbox reads from an imitation (urlpatterns, faults, webhook controls).

Faults, addressed by item_id: `revoke` makes the item need a new login (ITEM_LOGIN_REQUIRED)
until update-mode Link or `fault_clear`; `new_activity` adds `count` steps of new, changed and
removed transactions, then sends SYNC_UPDATES_AVAILABLE to the item's webhook URL (best effort);
`plaid_mutation` makes the next /transactions/sync call that continues a pagination loop fail
with TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION; `initial_update` and `historical_update`
finish the item's initial (recent 30 days) or historical update now, without waiting for
SIBLING_SANDBOX_RECENT_READY_S / SIBLING_SANDBOX_HISTORY_READY_S, and send the webhooks Plaid
sends then.

Plaid's own sandbox endpoints are served too (/sandbox/public_token/create,
/sandbox/item/fire_webhook, /sandbox/item/reset_login); the Link imitation's call is under
`_link/`, a path only this sandbox has. Every other path answers Plaid's JSON 404.
"""

from __future__ import annotations

import threading
from datetime import datetime

import requests
from django import db
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.utils import timezone

from sources.providers.plaid.provider import Plaid
from sources.sandbox.common import json_body, json_response, random_base62
from sources.sandbox.quotas import Quota, QuotaCaller
from sources.sandbox.store import activity_tick_add
from sources.sandbox.webhooks import WebhookInputError, activity_webhook_send, flag, text

from . import api
from .api import (
    HISTORICAL_UPDATE_COMPLETE,
    NOT_READY,
    STORE,
    item_by_id,
    item_by_token,
    plaid_error,
)
from .webhooks import plaid_webhook_send

fault_names = ("new_activity", "plaid_mutation", "initial_update", "historical_update")


# Plaid's per-Item and per-client limits (https://plaid.com/docs/errors/rate-limit-exceeded/):
# /accounts/get 15 a minute per Item and 15,000 per client (production); /transactions/sync 50
# and 2,500 (a third-party capture of Plaid's table: unconfirmed). Each answers 429
# RATE_LIMIT_EXCEEDED with the endpoint's code; Plaid documents the per-Item message only.
def _over(code: str) -> HttpResponse:
    body = plaid_error(
        "RATE_LIMIT_EXCEEDED",
        code,
        "rate limit exceeded for attempts to access this item. please try again later",
        None,
        random_base62(15),
    )
    return json_response(body, status=429)


_SYNC = {"routes": frozenset({"plaid-transactions-sync"})}
_ACCOUNTS = {"routes": frozenset({"plaid-accounts-get"})}
quotas = [
    Quota(
        "transactions_sync", "account", 50, 60, lambda q: _over("TRANSACTIONS_SYNC_LIMIT"), **_SYNC
    ),
    Quota(
        "transactions_sync_client",
        "app",
        2_500,
        60,
        lambda q: _over("TRANSACTIONS_SYNC_LIMIT"),
        **_SYNC,
    ),
    Quota("accounts_get", "account", 15, 60, lambda q: _over("ACCOUNTS_LIMIT"), **_ACCOUNTS),
    Quota("accounts_get_client", "app", 15_000, 60, lambda q: _over("ACCOUNTS_LIMIT"), **_ACCOUNTS),
]


def quota_caller(request: HttpRequest) -> QuotaCaller | None:
    """The Item behind the body's access token, and the client calling (None: the endpoint
    refuses the call itself, uncharged)."""
    body = json_body(request) or {}
    token = body.get("access_token")
    item = item_by_token(token) if isinstance(token, str) and token else None
    if item is None:
        return None
    client_id = body.get("client_id") or request.headers.get("PLAID-CLIENT-ID") or ""
    return QuotaCaller(account=item.item_id, app=str(client_id))


def fault_apply(account: str, fault: str, count: int) -> bool:
    if fault == "revoke":
        item = item_by_id(account, removed=None)
        if item is not None:
            item.update(login_required=True)
        return True
    if fault in ("initial_update", "historical_update"):
        updates_complete(account, historical=fault == "historical_update")
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
    """What Plaid sends the item's webhook URL (when it has one) after new activity:
    SYNC_UPDATES_AVAILABLE, but only once /transactions/sync was called on the item; before
    that, the legacy DEFAULT_UPDATE alone. (Plaid sends DEFAULT_UPDATE beside
    SYNC_UPDATES_AVAILABLE too; both mean the same to a client, so one is sent.)"""
    item = item_by_id(item_id)
    if item is None or not item.webhook:
        return None
    code = "SYNC_UPDATES_AVAILABLE" if item.sync_called else "DEFAULT_UPDATE"
    return plaid_webhook_send(item.item_id, "TRANSACTIONS", code, url=item.webhook)


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


def plaid_item_link(
    *,
    client_user_id: str = "",
    institution_id: str = "ins_sandbox_first",
    days_requested: int = 182,
    webhook: str = "",
    ready: bool = True,
) -> dict:
    """A new sandbox bank made the way a client of Plaid's sandbox makes one (for benchmarks and
    tests): /sandbox/public_token/create, then the exchange. {"access_token", "item_id"}.

    `ready` finishes its initial and historical updates at once (a benchmark measures
    ingestion, not the bank's preparation).
    """
    creds = Plaid.client_credentials()
    options: dict = {"transactions": {"days_requested": days_requested}}
    if webhook:
        options["webhook"] = webhook
    public = requests.post(
        f"{Plaid.url('api')}/sandbox/public_token/create",
        json={
            **creds,
            "institution_id": institution_id,
            "initial_products": ["transactions"],
            "options": options,
        },
        timeout=30,
    )
    public.raise_for_status()
    exchanged = Plaid.public_token_exchange(public.json()["public_token"])
    if ready:
        updates_complete(exchanged["item_id"], historical=True, notify=False)
    return exchanged


def updates_complete(item_id: str, *, historical: bool, notify: bool = True) -> None:
    """Finish the item's initial update now (and its historical one when `historical`), then
    send what Plaid sends then: the legacy INITIAL_UPDATE / HISTORICAL_UPDATE, and
    SYNC_UPDATES_AVAILABLE once /transactions/sync was called on the item (best effort)."""
    item = item_by_id(item_id)
    if item is None:
        return
    now = timezone.now().isoformat()
    was = item.update_status()
    if was == NOT_READY:
        item.update(initial_update_at=now)
    if historical and was != HISTORICAL_UPDATE_COMPLETE:
        item.update(historical_update_at=now)
    if not notify or not item.webhook:
        return
    codes = []
    if was == NOT_READY:
        codes.append("INITIAL_UPDATE")
    if historical and was != HISTORICAL_UPDATE_COMPLETE:
        codes.append("HISTORICAL_UPDATE")
    if codes and item.sync_called:
        codes.append("SYNC_UPDATES_AVAILABLE")
    url = item.webhook
    for code in codes:
        activity_webhook_send(
            lambda code=code: plaid_webhook_send(item_id, "TRANSACTIONS", code, url=url)
        )


def _updates_timed(item: api.PlaidItem) -> None:
    """When a new Item's initial and historical updates come later (the sandbox's
    SIBLING_SANDBOX_RECENT_READY_S / SIBLING_SANDBOX_HISTORY_READY_S are not 0, as with
    `make run`), send their webhooks then, as Plaid does, from a timer thread."""
    if not getattr(settings, "SIBLING_SANDBOX_SEND_WEBHOOKS", True) or not item.webhook:
        return
    now = timezone.now()
    for name, historical in (("initial_update_at", False), ("historical_update_at", True)):
        delay = (datetime.fromisoformat(item.record.data[name]) - now).total_seconds()
        if delay > 0:
            timer = threading.Timer(delay, _update_due, args=(item.item_id, historical))
            timer.daemon = True  # never holds the process open
            timer.start()


def _update_due(item_id: str, historical: bool) -> None:
    try:
        update_webhooks(item_id, historical=historical)
    finally:
        db.connection.close()  # the timer's own thread opened it


def update_webhooks(item_id: str, *, historical: bool) -> None:
    """What Plaid sends when an item's initial (or historical) update is done: the legacy
    INITIAL_UPDATE (HISTORICAL_UPDATE), and SYNC_UPDATES_AVAILABLE only once /transactions/sync
    was called on the item (best effort)."""
    item = item_by_id(item_id)
    if item is None or not item.webhook:
        return
    code = "HISTORICAL_UPDATE" if historical else "INITIAL_UPDATE"
    codes = [code, "SYNC_UPDATES_AVAILABLE"] if item.sync_called else [code]
    url = item.webhook
    for each in codes:
        activity_webhook_send(
            lambda each=each: plaid_webhook_send(item_id, "TRANSACTIONS", each, url=url)
        )


def _webhook_fire(item: api.PlaidItem, webhook_type: str, webhook_code: str) -> list[int]:
    return plaid_webhook_send(item.item_id, webhook_type, webhook_code, url=item.webhook)


api.webhook_fire = _webhook_fire
api.item_created = _updates_timed


urlpatterns = [
    path("plaid/link-initialize.js", api.link_script, name="plaid-link-script"),
    # The Link imitation's own call (Plaid's Link has its own channel to Plaid): sandbox-only.
    path(
        "plaid/_link/public_token/create",
        api.link_public_token_create,
        name="plaid-link-internal-public-token",
    ),
    path("plaid/link/token/create", api.link_token_create, name="plaid-link-token-create"),
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
    path(
        "plaid/sandbox/public_token/create",
        api.sandbox_public_token_create,
        name="plaid-sandbox-public-token-create",
    ),
    path(
        "plaid/sandbox/item/fire_webhook",
        api.sandbox_item_fire_webhook,
        name="plaid-sandbox-item-fire-webhook",
    ),
    path(
        "plaid/sandbox/item/reset_login",
        api.sandbox_item_reset_login,
        name="plaid-sandbox-item-reset-login",
    ),
    # Last: every other path under Plaid answers Plaid's JSON 404, never a page.
    path("plaid", api.not_found),
    path("plaid/", api.not_found),
    path("plaid/<path:rest>", api.not_found, name="plaid-not-found"),
]
