"""The sandbox's Plaid: its API (version 2020-09-14) and Link, close enough for plaid-python.

Every endpoint is a POST with a JSON body; client credentials come in the body (`client_id`,
`secret`) or in the PLAID-CLIENT-ID / PLAID-SECRET headers. Errors use the PlaidError shape with
Plaid's HTTP statuses (https://plaid.com/docs/errors/). plaid-python fails to deserialise a
response that lacks any required key, so every response here carries all of them, null where
the spec allows it.

Transactions: each item has about six months of deterministic history (seeded by its item_id)
ending on the day it was linked, then one batch of changes per `new_activity` step: pending
transactions post (removed, then added again under a new id with `pending_transaction_id`), a
few new ones arrive and a couple of recent ones are modified. `/transactions/sync` pages through
the net difference between the cursor's position and a snapshot taken on the loop's first call;
cursors are opaque base64 and encode (from, to, offset).

State lives in the sandbox's state store: link tokens, public tokens (spent by expiring them) and
items (keyed by their access token, owned by their item_id, the account faults address).
"""

from __future__ import annotations

import base64
import copy
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import wraps
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings
from django.db import IntegrityError
from django.http import HttpRequest, HttpResponse
from django.template import Context, Template
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET

from sources.sandbox.common import (
    json_body,
    json_response,
    opaque_decode,
    opaque_encode,
    random_base62,
    rfc3339,
    seeded_random,
    stable_base62,
    stable_int,
)
from sources.sandbox.faults import fault_take, faults_pending
from sources.sandbox.keys import (
    private_key_of,
    signing_key_by_kid,
    signing_key_rotate,
    signing_key_stored,
)
from sources.sandbox.models import SandboxRecord, SigningKey
from sources.sandbox.store import (
    activity_ticks,
    record_create,
    record_get,
    record_set,
    record_spend,
    records_of,
)

LINK_TOKEN_LIFETIME = timedelta(hours=4)
UPDATE_LINK_TOKEN_LIFETIME = timedelta(minutes=30)
PUBLIC_TOKEN_LIFETIME = timedelta(minutes=30)
# Plaid's default history when no days_requested is given, and its bounds:
# https://plaid.com/docs/api/link/#link-token-create-request-transactions-days-requested
DEFAULT_DAYS_REQUESTED = 90
MAX_DAYS_REQUESTED = 730
# What the initial update (INITIAL_UPDATE_COMPLETE) holds: the most recent 30 days.
INITIAL_UPDATE_DAYS = 30
WEBHOOK_KEY_PURPOSE = "plaid-webhook"
LINK_SCRIPT = Path(__file__).with_name("link-initialize.js")
# The state store's namespace and kinds.
STORE = "plaid"
ITEM_KIND = "item"
LINK_TOKEN_KIND = "link_token"  # noqa: S105 - a record kind, not a secret
PUBLIC_TOKEN_KIND = "public_token"  # noqa: S105 - a record kind, not a secret

# (key, type, subtype, name)
_CHECKING = ("checking", "depository", "checking", "Plaid Checking")
_SAVINGS = ("savings", "depository", "savings", "Plaid Saving")
_CREDIT = ("credit", "credit", "credit card", "Plaid Credit Card")
INSTITUTIONS: dict[str, dict[str, Any]] = {
    "ins_sandbox_first": {"name": "First Sandbox Bank", "accounts": [_CHECKING, _SAVINGS, _CREDIT]},
    "ins_sandbox_union": {"name": "Sandbox Credit Union", "accounts": [_CHECKING, _CREDIT]},
    "ins_sandbox_savings": {"name": "Sandbox Savings & Loan", "accounts": [_CHECKING, _SAVINGS]},
}

# (name, merchant_name, pfc primary, pfc detailed, legacy category, channel, low, high, account)
_MERCHANTS = [
    ("Starbucks", "Starbucks", "FOOD_AND_DRINK", "FOOD_AND_DRINK_COFFEE",
     ["Food and Drink", "Restaurants", "Coffee Shop"], "in store", 3.5, 9.0, "credit"),
    ("Uber 063015 SF**POOL**", "Uber", "TRANSPORTATION", "TRANSPORTATION_TAXIS_AND_RIDE_SHARES",
     ["Travel", "Taxi"], "online", 8.0, 42.0, "credit"),
    ("SAFEWAY #1234", "Safeway", "FOOD_AND_DRINK", "FOOD_AND_DRINK_GROCERIES",
     ["Shops", "Supermarkets and Groceries"], "in store", 18.0, 160.0, "checking"),
    ("AMAZON MKTPL*AB12CD", "Amazon", "GENERAL_MERCHANDISE",
     "GENERAL_MERCHANDISE_ONLINE_MARKETPLACES", ["Shops", "Digital Purchase"], "online",
     9.0, 120.0, "credit"),
    ("Netflix.com", "Netflix", "ENTERTAINMENT", "ENTERTAINMENT_TV_AND_MOVIES",
     ["Service", "Subscription"], "online", 15.49, 15.49, "credit"),
    ("Shell Oil 5744", "Shell", "TRANSPORTATION", "TRANSPORTATION_GAS",
     ["Travel", "Gas Stations"], "in store", 25.0, 70.0, "credit"),
    ("Sweetgreen", "Sweetgreen", "FOOD_AND_DRINK", "FOOD_AND_DRINK_RESTAURANT",
     ["Food and Drink", "Restaurants"], "in store", 11.0, 19.0, "credit"),
    ("CITY UTILITIES PAYMENT", None, "RENT_AND_UTILITIES",
     "RENT_AND_UTILITIES_GAS_AND_ELECTRICITY", ["Service", "Utilities"], "online",
     60.0, 140.0, "checking"),
    ("ATM WITHDRAWAL 0042", None, "TRANSFER_OUT", "TRANSFER_OUT_WITHDRAWAL",
     ["Transfer", "Withdrawal", "ATM"], "other", 20.0, 200.0, "checking"),
]  # fmt: skip
_PAYROLL = ("ACME CORP PAYROLL", "ACME Corp", "INCOME", "INCOME_WAGES",
            ["Transfer", "Payroll"], "other", -2600.0, -2400.0, "checking")  # fmt: skip
_RENT = ("RENT PAYMENT OAK APTS", None, "RENT_AND_UTILITIES", "RENT_AND_UTILITIES_RENT",
         ["Payment", "Rent"], "other", 1850.0, 1850.0, "checking")  # fmt: skip
_CARD_PAYMENT = ("CREDIT CARD PAYMENT", None, "LOAN_PAYMENTS",
                 "LOAN_PAYMENTS_CREDIT_CARD_PAYMENT", ["Payment", "Credit Card"], "other",
                 400.0, 900.0, "checking")  # fmt: skip
_SAVINGS_TRANSFER = ("TRANSFER TO SAVINGS", None, "TRANSFER_OUT", "TRANSFER_OUT_SAVINGS",
                     ["Transfer", "Credit"], "other", 100.0, 300.0, "checking")  # fmt: skip


# --- Items ---------------------------------------------------------------------------------------

NOT_READY = "NOT_READY"
INITIAL_UPDATE_COMPLETE = "INITIAL_UPDATE_COMPLETE"
HISTORICAL_UPDATE_COMPLETE = "HISTORICAL_UPDATE_COMPLETE"


@dataclass
class PlaidItem:
    """A linked institution login. Created when Link succeeds, usable once exchanged.

    A record keyed by its access token and owned by its item_id; the rest is in its data.
    """

    record: SandboxRecord

    @property
    def pk(self) -> Any:
        return self.record.pk

    @property
    def item_id(self) -> str:
        return self.record.account

    @property
    def access_token(self) -> str:
        return self.record.key

    @property
    def created_at(self) -> datetime:
        return self.record.created_at

    def _get(self, name: str, default: Any) -> Any:
        return self.record.data.get(name, default)

    client_id = property(lambda self: str(self._get("client_id", "")))
    client_user_id = property(lambda self: str(self._get("client_user_id", "")))
    institution_id = property(lambda self: str(self._get("institution_id", "")))
    institution_name = property(lambda self: str(self._get("institution_name", "")))
    products = property(lambda self: list(self._get("products", [])))
    webhook = property(lambda self: str(self._get("webhook", "")))
    exchanged = property(lambda self: bool(self._get("exchanged", False)))
    login_required = property(lambda self: bool(self._get("login_required", False)))
    removed = property(lambda self: bool(self._get("removed", False)))
    days_requested = property(lambda self: int(self._get("days_requested", DEFAULT_DAYS_REQUESTED)))
    # Whether /transactions/sync was ever called: Plaid sends SYNC_UPDATES_AVAILABLE only then.
    sync_called = property(lambda self: bool(self._get("sync_called", False)))

    def _moment(self, name: str) -> datetime:
        value = self._get(name, None)
        return datetime.fromisoformat(value) if value else self.created_at

    def update_status(self, now: datetime | None = None) -> str:
        """Plaid's transactions_update_status of the item now: NOT_READY until its initial
        update (the recent 30 days) is done, INITIAL_UPDATE_COMPLETE until its historical one
        is, then HISTORICAL_UPDATE_COMPLETE."""
        now = now or timezone.now()
        if now < self._moment("initial_update_at"):
            return NOT_READY
        if now < self._moment("historical_update_at"):
            return INITIAL_UPDATE_COMPLETE
        return HISTORICAL_UPDATE_COMPLETE

    def update(self, **changes: Any) -> None:
        """Change fields of the item (each one atomically), here and in the store."""
        record_set(self.record, **changes)


def item_by_token(access_token: str) -> PlaidItem | None:
    record = record_get(STORE, ITEM_KIND, access_token)
    return PlaidItem(record) if record is not None else None


def item_by_id(item_id: str, *, removed: bool | None = False) -> PlaidItem | None:
    """The item with this item_id (not removed, unless `removed` is True or None)."""
    for record in records_of(STORE, item_id, ITEM_KIND):
        item = PlaidItem(record)
        if removed is None or item.removed == removed:
            return item
    return None


# --- Errors and the endpoint wrapper --------------------------------------------------------------


class PlaidFailure(Exception):
    """An error answer in the PlaidError shape."""

    def __init__(
        self,
        status: int,
        error_type: str,
        error_code: str,
        message: str,
        display_message: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.error_code = error_code
        self.message = message
        self.display_message = display_message

    def body(self, request_id: str) -> dict:
        return plaid_error(
            self.error_type, self.error_code, self.message, self.display_message, request_id
        )


def plaid_error(
    error_type: str,
    error_code: str,
    message: str,
    display_message: str | None,
    request_id: str | None = None,
) -> dict:
    body: dict[str, Any] = {
        "error_type": error_type,
        "error_code": error_code,
        "error_code_reason": None,
        "error_message": message,
        "display_message": display_message,
        "request_id": request_id,
        "causes": [],
        "documentation_url": f"https://plaid.com/docs/errors/#{error_code.lower()}",
        "suggested_action": None,
    }
    if request_id is None:
        del body["request_id"]
    return body


def _missing(*fields: str) -> PlaidFailure:
    return PlaidFailure(
        400,
        "INVALID_REQUEST",
        "MISSING_FIELDS",
        f"the following required fields are missing: {', '.join(fields)}",
    )


def _invalid_field(message: str) -> PlaidFailure:
    return PlaidFailure(400, "INVALID_REQUEST", "INVALID_FIELD", message)


def _invalid_access_token() -> PlaidFailure:
    return PlaidFailure(
        400,
        "INVALID_INPUT",
        "INVALID_ACCESS_TOKEN",
        "provided access token is in an invalid format or is no longer valid. expected format: "
        "access-<environment>-<identifier>",
    )


LOGIN_REQUIRED_MESSAGE = (
    "the login details of this item have changed (credentials, MFA, or required user action) "
    "and a user login is required to update this information. use Link's update mode to restore "
    "the item to a good state"
)
LOGIN_REQUIRED_DISPLAY = (
    "The login details of this item have changed (credentials, MFA, or required user action) "
    "and a user login is required to update this information."
)
MUTATION_MESSAGE = (
    "Underlying transaction data changed since last page was fetched. Please restart "
    "pagination from last update."
)


@dataclass
class PlaidCall:
    """One request: its id, JSON body and the authenticated client."""

    request_id: str
    body: dict[str, Any]
    client_id: str

    def text(self, field: str, *, required: bool = True) -> str:
        value = self.body.get(field)
        if value is None or value == "":
            if required:
                raise _missing(field)
            return ""
        if not isinstance(value, str):
            raise _invalid_field(f"{field} must be a string")
        return value

    def item(self, endpoint: str, *, needs_login: bool = True) -> tuple[PlaidItem, set[str]]:
        """The item behind `access_token`, after its faults (429/500) and login state."""
        token = self.text("access_token")
        if not token.startswith("access-"):
            raise _invalid_access_token()
        item = item_by_token(token)
        if item is None or item.client_id != self.client_id or not item.exchanged or item.removed:
            raise _invalid_access_token()
        pending = faults_pending("plaid", item.item_id)
        if fault_take("plaid", item.item_id, "rate_limit", pending):
            code = {
                "transactions/sync": "TRANSACTIONS_SYNC_LIMIT",
                "accounts/get": "ACCOUNTS_LIMIT",
            }.get(endpoint, "ITEM_GET_LIMIT")
            raise PlaidFailure(
                429,
                "RATE_LIMIT_EXCEEDED",
                code,
                "rate limit exceeded for attempts to access this item. please try again later",
            )
        if fault_take("plaid", item.item_id, "server_error", pending):
            raise PlaidFailure(
                500,
                "API_ERROR",
                "INTERNAL_SERVER_ERROR",
                "an unexpected error occurred",
                "Something went wrong. Please try again later.",
            )
        if needs_login and item.login_required:
            raise PlaidFailure(
                400,
                "ITEM_ERROR",
                "ITEM_LOGIN_REQUIRED",
                LOGIN_REQUIRED_MESSAGE,
                LOGIN_REQUIRED_DISPLAY,
            )
        return item, pending


def _cors(response: HttpResponse) -> HttpResponse:
    # Link's script may be served from another origin than the page that loads it.
    response["Access-Control-Allow-Origin"] = "*"
    response["Access-Control-Allow-Headers"] = "Content-Type"
    response["Access-Control-Allow-Methods"] = "POST, OPTIONS"
    return response


def plaid_endpoint(
    *, client_auth: bool = True, cors: bool = False
) -> Callable[[Callable[[PlaidCall], dict]], Callable[[HttpRequest], HttpResponse]]:
    """Wrap a handler `(PlaidCall) -> dict` into a view: body parsing, auth, errors, request_id."""

    def decorate(handler: Callable[[PlaidCall], dict]) -> Callable[[HttpRequest], HttpResponse]:
        @csrf_exempt
        @wraps(handler)
        def view(request: HttpRequest) -> HttpResponse:
            request_id = random_base62(15)
            if cors and request.method == "OPTIONS":
                return _cors(HttpResponse(status=204))
            try:
                if request.method != "POST":
                    raise PlaidFailure(
                        405, "INVALID_REQUEST", "INVALID_HTTP_METHOD", "only POST is supported"
                    )
                body = json_body(request)
                if body is None:
                    raise PlaidFailure(
                        400,
                        "INVALID_REQUEST",
                        "INVALID_BODY",
                        "body could not be parsed as JSON",
                    )
                client_id = ""
                if client_auth:
                    client_id = _authenticate(request, body)
                result = handler(PlaidCall(request_id, body, client_id))
                response = json_response({**result, "request_id": request_id})
            except PlaidFailure as failure:
                response = json_response(failure.body(request_id), status=failure.status)
            return _cors(response) if cors else response

        return view

    return decorate


def _authenticate(request: HttpRequest, body: dict) -> str:
    client_id = body.get("client_id") or request.headers.get("PLAID-CLIENT-ID") or ""
    secret = body.get("secret") or request.headers.get("PLAID-SECRET") or ""
    missing = [name for name, value in (("client_id", client_id), ("secret", secret)) if not value]
    if missing:
        raise _missing(*missing)
    if not isinstance(client_id, str) or settings.SIBLING_SANDBOX_CLIENTS.get(client_id) != secret:
        raise PlaidFailure(
            400, "INVALID_INPUT", "INVALID_API_KEYS", "invalid client_id or secret provided"
        )
    return client_id


# --- Items and accounts ---------------------------------------------------------------------------


def item_accounts(item: PlaidItem) -> list[dict]:
    """The item's accounts as AccountBase objects, stable for its lifetime."""
    institution = INSTITUTIONS.get(item.institution_id, INSTITUTIONS["ins_sandbox_first"])
    accounts = []
    for index, (key, kind, subtype, name) in enumerate(institution["accounts"]):
        rng = seeded_random("plaid-account", item.item_id, key)
        if kind == "credit":
            current = round(rng.uniform(150, 2500), 2)
            balances = {"available": round(5000 - current, 2), "current": current, "limit": 5000.0}
        else:
            current = round(rng.uniform(800, 12000), 2)
            balances = {"available": current, "current": current, "limit": None}
        accounts.append(
            {
                "account_id": _account_id(item, key),
                "balances": {
                    **balances,
                    "iso_currency_code": "USD",
                    "unofficial_currency_code": None,
                    "last_updated_datetime": None,
                },
                "mask": f"{(stable_int('plaid-mask', item.item_id, index) % 9000) + 1000}",
                "name": name,
                "official_name": f"{institution['name']} {name}",
                "type": kind,
                "subtype": subtype,
            }
        )
    return accounts


def _account_id(item: PlaidItem, key: str) -> str:
    return stable_base62(37, "plaid-account-id", item.item_id, key)


def _item_error(item: PlaidItem) -> dict | None:
    if not item.login_required:
        return None
    return plaid_error(
        "ITEM_ERROR", "ITEM_LOGIN_REQUIRED", LOGIN_REQUIRED_MESSAGE, LOGIN_REQUIRED_DISPLAY
    )


def item_resource(item: PlaidItem, *, consent_fields: bool = True) -> dict:
    """Plaid's Item; with its consent fields (`created_at`) as /item/get answers it
    (ItemWithConsentFields), without them as /accounts/get and /item/webhook/update do (Item)."""
    products = item.products or ["transactions"]
    resource = {
        "item_id": item.item_id,
        "institution_id": item.institution_id,
        "institution_name": item.institution_name,
        "webhook": item.webhook or None,
        "error": _item_error(item),
        "available_products": sorted(
            {"assets", "auth", "balance", "identity", "investments", "liabilities"} - set(products)
        ),
        "billed_products": list(products),
        "products": list(products),
        "consented_products": list(products),
        "consent_expiration_time": None,
        "update_type": "background",
        "auth_method": None,
    }
    if consent_fields:
        resource["created_at"] = rfc3339(item.created_at)
    return resource


# --- Transactions ---------------------------------------------------------------------------------


def _transaction(
    item: PlaidItem,
    accounts: dict[str, str],
    txn_id: str,
    merchant: tuple,
    amount: float,
    day: date,
    *,
    pending: bool = False,
    pending_transaction_id: str | None = None,
    authorized: date | None = None,
) -> dict:
    name, merchant_name, primary, detailed, category, channel, _, _, account_kind = merchant
    account_id = accounts.get(account_kind) or accounts["checking"]
    in_store = channel == "in store"
    return {
        "account_id": account_id,
        "account_owner": None,
        "amount": amount,
        "iso_currency_code": "USD",
        "unofficial_currency_code": None,
        "authorized_date": (authorized or day).isoformat(),
        "authorized_datetime": None,
        "category": category,
        "category_id": None,
        "check_number": None,
        "counterparties": (
            [
                {
                    "name": merchant_name,
                    "type": "merchant",
                    "website": None,
                    "logo_url": None,
                    "entity_id": None,
                    "confidence_level": "VERY_HIGH",
                }
            ]
            if merchant_name
            else []
        ),
        "date": day.isoformat(),
        "datetime": None,
        "location": {
            "address": None,
            "city": "San Francisco" if in_store else None,
            "region": "CA" if in_store else None,
            "postal_code": None,
            "country": "US" if in_store else None,
            "lat": None,
            "lon": None,
            "store_number": None,
        },
        "logo_url": None,
        "merchant_entity_id": None,
        "merchant_name": merchant_name,
        "name": name,
        "original_description": None,
        "payment_channel": channel,
        "payment_meta": {
            "by_order_of": None,
            "payee": None,
            "payer": None,
            "payment_method": None,
            "payment_processor": None,
            "ppd_id": None,
            "reason": None,
            "reference_number": None,
        },
        "pending": pending,
        "pending_transaction_id": pending_transaction_id,
        "personal_finance_category": {
            "primary": primary,
            "detailed": detailed,
            "confidence_level": "VERY_HIGH",
        },
        "personal_finance_category_icon_url": (
            f"https://plaid-category-icons.plaid.com/PFC_{primary}.png"
        ),
        "transaction_code": None,
        "transaction_id": txn_id,
        "transaction_type": "place"
        if in_store
        else ("digital" if channel == "online" else "special"),
        "website": None,
    }


def _amount(rng: Any, merchant: tuple) -> float:
    low, high = merchant[6], merchant[7]
    return round(rng.uniform(low, high), 2)


def _day_transactions(
    item: PlaidItem, accounts: dict[str, str], day: date, linked: date
) -> list[dict]:
    rng = seeded_random("plaid-day", item.item_id, day.toordinal())
    chosen: list[tuple] = []
    if day.day in (1, 15):
        chosen.append(_PAYROLL)
    if day.day == 1:
        chosen.append(_RENT)
    if day.day == 20:
        chosen.append(_CARD_PAYMENT)
    if day.day == 16 and "savings" in accounts:
        chosen.append(_SAVINGS_TRANSFER)
    chosen.extend(rng.choice(_MERCHANTS) for _ in range(rng.randint(0, 4)))
    recent = (linked - day).days < 2
    transactions = []
    for index, merchant in enumerate(chosen):
        amount, pending_draw = _amount(rng, merchant), rng.random()
        pending = recent and merchant[6] > 0 and pending_draw < 0.5
        txn_id = stable_base62(37, "plaid-txn", item.item_id, day.toordinal(), index)
        transactions.append(
            _transaction(
                item,
                accounts,
                txn_id,
                merchant,
                amount,
                day,
                pending=pending,
                authorized=day - timedelta(days=1 if index % 3 == 0 else 0),
            )
        )
    return transactions


class Ledger:
    """Every state of an item's transactions.

    Position 0 is empty, 1 the initial history, k + 1 the state after k activity steps.
    """

    def __init__(self, item: PlaidItem, ticks: list[datetime]) -> None:
        self.item = item
        self.ticks = ticks
        self.accounts = {a: _account_id(item, a) for a in ("checking", "savings", "credit")}
        institution = INSTITUTIONS.get(item.institution_id, INSTITUTIONS["ins_sandbox_first"])
        present = {entry[0] for entry in institution["accounts"]}
        self.accounts = {k: v for k, v in self.accounts.items() if k in present}

    @property
    def size(self) -> int:
        return 1 + len(self.ticks)

    def states(self, *positions: int) -> dict[int, dict[str, dict]]:
        wanted = set(positions)
        found: dict[int, dict[str, dict]] = {}
        if 0 in wanted:
            found[0] = {}
        if not wanted - {0}:
            return found
        linked = self.item.created_at.date()
        state: dict[str, dict] = {}
        # The days the item was linked for (days_requested), the day it was linked included.
        for offset in range(self.item.days_requested - 1, -1, -1):
            for txn in _day_transactions(
                self.item, self.accounts, linked - timedelta(days=offset), linked
            ):
                state[txn["transaction_id"]] = txn
        if 1 in wanted:
            found[1] = dict(state)
        for seq, at in enumerate(self.ticks):
            if len(found) == len(wanted):
                break
            self._step(state, seq, at)
            if seq + 2 in wanted:
                found[seq + 2] = dict(state)
        return found

    def _step(self, state: dict[str, dict], seq: int, at: datetime) -> None:
        """One step of activity: pending ones post, three arrive, two change (in place)."""
        rng = seeded_random("plaid-tick", self.item.item_id, seq)
        day = at.date()
        merchants_by_name = {m[0]: m for m in (*_MERCHANTS, _PAYROLL, _RENT, _CARD_PAYMENT)}
        pending = sorted(
            (t for t in state.values() if t["pending"]), key=lambda t: t["transaction_id"]
        )
        # Changes pick among recent purchases that existed before this step, so a client sees
        # them as modified (or removed), never as something it has not been told about.
        posted = sorted(
            (t for t in state.values() if not t["pending"] and t["amount"] > 0),
            key=lambda t: (t["date"], t["transaction_id"]),
        )[-30:]
        for old in pending:
            del state[old["transaction_id"]]
            posted_id = stable_base62(37, "plaid-posted", self.item.item_id, old["transaction_id"])
            merchant = merchants_by_name.get(old["name"], _MERCHANTS[0])
            state[posted_id] = _transaction(
                self.item,
                self.accounts,
                posted_id,
                merchant,
                old["amount"],
                day,
                pending_transaction_id=old["transaction_id"],
                authorized=date.fromisoformat(old["date"]),
            )
        if not pending and posted:
            # Nothing was pending: a recent purchase is reversed instead, so something is removed.
            gone = rng.choice(posted)
            del state[gone["transaction_id"]]
            posted.remove(gone)
        for changed in rng.sample(posted, min(2, len(posted))):
            updated = copy.deepcopy(changed)
            updated["amount"] = round(changed["amount"] + rng.uniform(0.5, 6.0), 2)
            state[updated["transaction_id"]] = updated
        for index in range(3):
            merchant = rng.choice(_MERCHANTS)
            txn_id = stable_base62(37, "plaid-new", self.item.item_id, seq, index)
            state[txn_id] = _transaction(
                self.item,
                self.accounts,
                txn_id,
                merchant,
                _amount(rng, merchant),
                day,
                pending=index == 0,
            )


def _ordered(transactions: list[dict]) -> list[dict]:
    return sorted(transactions, key=lambda t: (t["date"], t["transaction_id"]))


def ledger_diff(before: dict[str, dict], after: dict[str, dict]) -> list[tuple[str, dict]]:
    """The net change between two states, as (kind, entry) in added, modified, removed order."""
    added = _ordered([t for i, t in after.items() if i not in before])
    modified = _ordered([t for i, t in after.items() if i in before and before[i] != t])
    removed = _ordered([t for i, t in before.items() if i not in after])
    return (
        [("added", t) for t in added]
        + [("modified", t) for t in modified]
        + [
            ("removed", {"transaction_id": t["transaction_id"], "account_id": t["account_id"]})
            for t in removed
        ]
    )


def recent_only(item: PlaidItem, state: dict[str, dict]) -> dict[str, dict]:
    """What an item holds before its historical update: its transactions of the
    INITIAL_UPDATE_DAYS before it was linked, and everything since."""
    cutoff = (item.created_at.date() - timedelta(days=INITIAL_UPDATE_DAYS - 1)).isoformat()
    return {i: t for i, t in state.items() if t["date"] >= cutoff}


def _cursor_tag(item: PlaidItem) -> str:
    return stable_base62(8, "plaid-cursor", item.item_id)


@dataclass
class CursorPosition:
    """Where a cursor stands: ledger positions `start` to `end`, `offset` changes into their
    difference, and whether each side held the whole history (`start_full`, `end_full`) or
    only the initial update's recent days."""

    start: int
    end: int
    offset: int
    start_full: bool
    end_full: bool

    def encode(self, item: PlaidItem) -> str:
        return opaque_encode(
            {
                "i": _cursor_tag(item),
                "s": self.start,
                "e": self.end,
                "o": self.offset,
                "hs": self.start_full,
                "he": self.end_full,
            }
        )


def _cursor_decode(item: PlaidItem, cursor: str, size: int) -> CursorPosition:
    decoded = opaque_decode(cursor)
    if isinstance(decoded, dict) and decoded.get("i") == _cursor_tag(item):
        s, e, o = decoded.get("s"), decoded.get("e"), decoded.get("o")
        hs, he = decoded.get("hs", True), decoded.get("he", True)
        if all(isinstance(v, int) and not isinstance(v, bool) for v in (s, e, o)):
            if 0 <= s <= e <= size and o >= 0 and isinstance(hs, bool) and isinstance(he, bool):
                return CursorPosition(s, e, o, hs, he)
    raise _invalid_field("cursor is not valid for this item")


def _malform(page: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """Two broken transactions: one without `amount`, one with an impossible date."""
    broken = 0
    result = []
    for kind, entry in page:
        if kind != "removed" and broken < 2:
            entry = copy.deepcopy(entry)
            if broken == 0:
                del entry["amount"]
            else:
                entry["date"] = "2024-13-45"
            broken += 1
        result.append((kind, entry))
    return result


# --- Views ----------------------------------------------------------------------------------------


@plaid_endpoint()
def link_token_create(call: PlaidCall) -> dict:
    body = call.body
    user = body.get("user")
    missing = [f for f in ("client_name", "language", "country_codes") if not body.get(f)]
    if not isinstance(user, dict) or not user.get("client_user_id"):
        missing.append("user.client_user_id")
    access_token = call.text("access_token", required=False)
    products = body.get("products") or []
    if not access_token and not products:
        missing.append("products")
    if missing:
        raise _missing(*missing)
    if not isinstance(body["country_codes"], list) or not isinstance(products, list):
        raise _invalid_field("country_codes and products must be lists")
    if len(str(body["client_name"])) > 30:
        raise _invalid_field("client_name must be at most 30 characters")
    webhook = call.text("webhook", required=False)
    transactions = body.get("transactions") or {}
    if not isinstance(transactions, dict):
        raise _invalid_field("transactions must be an object")
    days_requested = _days_requested(transactions.get("days_requested"))
    item_id = ""
    lifetime = LINK_TOKEN_LIFETIME
    if access_token:
        item, _ = call.item("link/token/create", needs_login=False)
        item_id = item.item_id
        lifetime = UPDATE_LINK_TOKEN_LIFETIME
    expires_at = timezone.now() + lifetime
    token = record_create(
        STORE,
        LINK_TOKEN_KIND,
        f"link-sandbox-{uuid.uuid4()}",
        account=item_id,
        data={
            "client_id": call.client_id,
            "client_user_id": str(user["client_user_id"]),
            "client_name": str(body["client_name"]),
            "products": [str(p) for p in products],
            "webhook": webhook,
            "item_id": item_id,
            "days_requested": days_requested,
        },
        expires_at=expires_at,
    )
    return {"link_token": token.key, "expiration": rfc3339(expires_at)}


def _days_requested(value: Any) -> int:
    """Plaid's `transactions.days_requested`: 1 to 730, 90 when left out."""
    if value is None:
        return DEFAULT_DAYS_REQUESTED
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid_field("days_requested must be an integer")
    if not 1 <= value <= MAX_DAYS_REQUESTED:
        raise _invalid_field(f"days_requested must be between 1 and {MAX_DAYS_REQUESTED}")
    return value


@plaid_endpoint(client_auth=False, cors=True)
def link_public_token_create(call: PlaidCall) -> dict:
    """What the Link imitation calls when the person presses Continue (no client secret
    needed). Sandbox-only, under `_link/`: Plaid's Link talks to Plaid by its own means, and
    a client of the API makes an Item with /sandbox/public_token/create instead."""
    link = record_get(STORE, LINK_TOKEN_KIND, call.text("link_token"), live=True)
    if link is None:
        raise PlaidFailure(
            400, "INVALID_INPUT", "INVALID_LINK_TOKEN", "provided link token is invalid or expired"
        )
    now = timezone.now()
    if link.data.get("item_id"):
        # Update mode: the same item, its login repaired.
        item = item_by_id(str(link.data["item_id"]))
        if item is None:
            raise _invalid_access_token()
        item.update(login_required=False)
        if link.data.get("webhook"):
            item.update(webhook=str(link.data["webhook"]))
    else:
        institution_id = call.text("institution_id")
        institution = INSTITUTIONS.get(institution_id)
        if institution is None:
            raise PlaidFailure(
                400, "INVALID_INPUT", "INVALID_INSTITUTION", "invalid institution_id provided"
            )
        item = _item_create(
            client_id=str(link.data.get("client_id", "")),
            client_user_id=str(link.data.get("client_user_id", "")),
            institution_id=institution_id,
            products=list(link.data.get("products") or []),
            webhook=str(link.data.get("webhook", "")),
            days_requested=int(link.data.get("days_requested") or DEFAULT_DAYS_REQUESTED),
            now=now,
        )
    public_token = _public_token_create(item, now)
    accounts = item_accounts(item)
    return {
        "public_token": public_token,
        # Extra, for the Link script's onSuccess metadata.
        "metadata": {
            "institution": {"name": item.institution_name, "institution_id": item.institution_id},
            "accounts": [
                {
                    "id": a["account_id"],
                    "name": a["name"],
                    "mask": a["mask"],
                    "type": a["type"],
                    "subtype": a["subtype"],
                    "verification_status": None,
                }
                for a in accounts
            ],
            "link_session_id": str(uuid.uuid4()),
            "public_token": public_token,
        },
    }


def _public_token_create(item: PlaidItem, now: datetime) -> str:
    public_token = f"public-sandbox-{uuid.uuid4()}"
    record_create(
        STORE,
        PUBLIC_TOKEN_KIND,
        public_token,
        account=item.item_id,
        expires_at=now + PUBLIC_TOKEN_LIFETIME,
    )
    return public_token


def _item_create(
    *,
    client_id: str,
    client_user_id: str,
    institution_id: str,
    products: list[str],
    webhook: str,
    days_requested: int,
    now: datetime,
) -> PlaidItem:
    """A new Item. Its transactions are not ready at once: the initial update (the recent 30
    days) is done SIBLING_SANDBOX_RECENT_READY_S seconds after it is made, the historical one
    SIBLING_SANDBOX_HISTORY_READY_S seconds after that."""
    initial_at = now + timedelta(seconds=settings.SIBLING_SANDBOX_RECENT_READY_S)
    historical_at = initial_at + timedelta(seconds=settings.SIBLING_SANDBOX_HISTORY_READY_S)
    for _ in range(5):
        try:
            record = record_create(
                STORE,
                ITEM_KIND,
                f"access-sandbox-{uuid.uuid4()}",
                account=random_base62(37),
                data={
                    "client_id": client_id,
                    "client_user_id": client_user_id,
                    "institution_id": institution_id,
                    "institution_name": INSTITUTIONS[institution_id]["name"],
                    "products": products or ["transactions"],
                    "webhook": webhook,
                    "days_requested": days_requested,
                    "initial_update_at": initial_at.isoformat(),
                    "historical_update_at": historical_at.isoformat(),
                    "sync_called": False,
                    "exchanged": False,
                    "login_required": False,
                    "removed": False,
                },
                created_at=now,
            )
        except IntegrityError:
            continue
        item = PlaidItem(record)
        if item_created is not None:
            item_created(item)
        return item
    raise PlaidFailure(500, "API_ERROR", "INTERNAL_SERVER_ERROR", "an unexpected error occurred")


# Set by the sandbox package: what follows a new Item (its updates' webhooks, when due).
item_created: Callable[[PlaidItem], None] | None = None


# --- Plaid's own sandbox endpoints ---------------------------------------------------------------
# https://plaid.com/docs/api/sandbox/


def _institution(call: PlaidCall) -> str:
    institution_id = call.text("institution_id")
    if institution_id not in INSTITUTIONS:
        raise PlaidFailure(
            400, "INVALID_INPUT", "INVALID_INSTITUTION", "invalid institution_id provided"
        )
    return institution_id


@plaid_endpoint()
def sandbox_public_token_create(call: PlaidCall) -> dict:
    """/sandbox/public_token/create: an Item made without Link. `institution_id` and
    `initial_products` are required; `options.webhook` and `options.transactions.days_requested`
    are honoured. Answers `{public_token, request_id}`."""
    body = call.body
    products = body.get("initial_products")
    if not body.get("institution_id") or not products:
        raise _missing(*[f for f in ("institution_id", "initial_products") if not body.get(f)])
    if not isinstance(products, list) or not all(isinstance(p, str) for p in products):
        raise _invalid_field("initial_products must be a list of strings")
    institution_id = _institution(call)
    options = body.get("options") or {}
    if not isinstance(options, dict):
        raise _invalid_field("options must be an object")
    webhook = options.get("webhook") or ""
    transactions = options.get("transactions") or {}
    if not isinstance(webhook, str) or not isinstance(transactions, dict):
        raise _invalid_field("options.webhook must be a string, options.transactions an object")
    now = timezone.now()
    item = _item_create(
        client_id=call.client_id,
        client_user_id="",
        institution_id=institution_id,
        products=list(products),
        webhook=webhook,
        days_requested=_days_requested(transactions.get("days_requested")),
        now=now,
    )
    return {"public_token": _public_token_create(item, now)}


@plaid_endpoint()
def sandbox_item_reset_login(call: PlaidCall) -> dict:
    """/sandbox/item/reset_login: the Item needs a new login (ITEM_LOGIN_REQUIRED) until it goes
    through Link's update mode. Answers `{reset_login: true, request_id}`."""
    item, _ = call.item("sandbox/item/reset_login", needs_login=False)
    item.update(login_required=True)
    return {"reset_login": True}


# The codes /sandbox/item/fire_webhook fires, with the type each belongs to:
# https://plaid.com/docs/api/sandbox/#sandboxitemfire_webhook
FIRE_WEBHOOK_TYPES = {
    "DEFAULT_UPDATE": "TRANSACTIONS",
    "SYNC_UPDATES_AVAILABLE": "TRANSACTIONS",
    "RECURRING_TRANSACTIONS_UPDATE": "TRANSACTIONS",
    "NEW_ACCOUNTS_AVAILABLE": "ITEM",
    "USER_PERMISSION_REVOKED": "ITEM",
    "USER_ACCOUNT_REVOKED": "ITEM",
    "PENDING_DISCONNECT": "ITEM",
    "LOGIN_REPAIRED": "ITEM",
    "ERROR": "ITEM",
}
# Set by the sandbox package: how a webhook is sent (kept out of this module, which webhooks.py
# imports).
webhook_fire: Callable[..., list[int]] | None = None


@plaid_endpoint()
def sandbox_item_fire_webhook(call: PlaidCall) -> dict:
    """/sandbox/item/fire_webhook: `access_token`, `webhook_code`, `webhook_type` (optional).

    Sent to the Item's webhook URL, signed as Plaid signs. SYNC_UPDATES_AVAILABLE is refused
    until /transactions/sync was called on the Item (Plaid sends it only then); ERROR also
    puts the Item in ITEM_LOGIN_REQUIRED, LOGIN_REPAIRED takes it out.
    """
    code = call.text("webhook_code")
    webhook_type = call.text("webhook_type", required=False) or FIRE_WEBHOOK_TYPES.get(code, "")
    if FIRE_WEBHOOK_TYPES.get(code) != webhook_type:
        raise _invalid_field(f"webhook_code {code!r} cannot be fired for this webhook_type")
    item, _ = call.item("sandbox/item/fire_webhook", needs_login=False)
    if not item.webhook:
        raise PlaidFailure(
            400,
            "INVALID_INPUT",
            "SANDBOX_WEBHOOK_INVALID",
            "the item has no webhook URL; set one with /item/webhook/update",
        )
    if code == "SYNC_UPDATES_AVAILABLE" and not item.sync_called:
        raise PlaidFailure(
            400,
            "INVALID_INPUT",
            "SANDBOX_WEBHOOK_INVALID",
            "SYNC_UPDATES_AVAILABLE is fired only after /transactions/sync was called on the item",
        )
    if code == "ERROR":
        item.update(login_required=True)
    elif code == "LOGIN_REPAIRED":
        item.update(login_required=False)
    assert webhook_fire is not None
    webhook_fire(item, webhook_type, code)
    return {"webhook_fired": True}


@csrf_exempt
def not_found(request: HttpRequest, rest: str = "") -> HttpResponse:
    """Any path Plaid does not serve: its JSON error, never a page."""
    failure = PlaidFailure(
        404, "INVALID_REQUEST", "NOT_FOUND", "the requested endpoint does not exist"
    )
    return json_response(failure.body(random_base62(15)), status=404)


@plaid_endpoint()
def item_public_token_exchange(call: PlaidCall) -> dict:
    value = call.text("public_token")
    invalid = PlaidFailure(
        400,
        "INVALID_INPUT",
        "INVALID_PUBLIC_TOKEN",
        "provided public token is expired, already used or in an invalid format. expected "
        "format: public-<environment>-<identifier>",
    )
    public = record_get(STORE, PUBLIC_TOKEN_KIND, value)
    if public is None:
        raise invalid
    item = item_by_id(public.account)
    if item is None or item.client_id != call.client_id:
        raise invalid
    if not record_spend(public):
        raise invalid
    item.update(exchanged=True)
    return {"access_token": item.access_token, "item_id": item.item_id}


@plaid_endpoint()
def item_get(call: PlaidCall) -> dict:
    item, _ = call.item("item/get", needs_login=False)
    return {
        "item": item_resource(item),
        "status": {
            "transactions": {
                "last_successful_update": rfc3339(timezone.now()),
                "last_failed_update": None,
            },
        },
    }


@plaid_endpoint()
def accounts_get(call: PlaidCall) -> dict:
    item, _ = call.item("accounts/get")
    return {"accounts": item_accounts(item), "item": item_resource(item, consent_fields=False)}


@plaid_endpoint()
def item_remove(call: PlaidCall) -> dict:
    """/item/remove, as Plaid answers it: `{request_id}` once the Item is gone; refused with
    INVALID_API_KEYS (wrong client), INVALID_ACCESS_TOKEN (unknown or already removed Item),
    and the Item's `server_error` (500) and `rate_limit` (429) faults, which remove nothing.
    A login the Item needs does not stop its removal."""
    item, _ = call.item("item/remove", needs_login=False)
    item.update(removed=True)
    return {}


@plaid_endpoint()
def item_webhook_update(call: PlaidCall) -> dict:
    item, _ = call.item("item/webhook/update", needs_login=False)
    item.update(webhook=call.text("webhook", required=False))
    return {"item": item_resource(item, consent_fields=False)}


@plaid_endpoint()
def transactions_sync(call: PlaidCall) -> dict:
    """/transactions/sync: `cursor` (omit for everything), `count` 1-500 (default 100).

    A new item is not ready at once: until its initial update, the answer is empty with
    `transactions_update_status` NOT_READY and an empty `next_cursor`; then the recent 30 days
    come (INITIAL_UPDATE_COMPLETE), and once the historical update is done, the older days are
    added from the cursor the client kept (HISTORICAL_UPDATE_COMPLETE).
    """
    count = call.body.get("count", 100)
    if count is None:
        count = 100
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 500:
        raise _invalid_field("count must be an integer between 1 and 500")
    cursor = call.body.get("cursor") or ""
    if not isinstance(cursor, str):
        raise _invalid_field("cursor must be a string")
    item, pending = call.item("transactions/sync")
    if not item.sync_called:
        item.update(sync_called=True)
    status = item.update_status()
    if status == NOT_READY:
        return {
            "added": [],
            "modified": [],
            "removed": [],
            "next_cursor": "",
            "has_more": False,
            "accounts": item_accounts(item),
            "transactions_update_status": status,
        }
    full = status == HISTORICAL_UPDATE_COMPLETE
    ledger = Ledger(item, activity_ticks(STORE, item.item_id))
    if cursor:
        at = _cursor_decode(item, cursor, ledger.size)
        if at.offset == 0:
            # A cursor at rest: this call opens a new loop against the newest snapshot.
            at = CursorPosition(at.end, ledger.size, 0, at.end_full, full)
        elif fault_take("plaid", item.item_id, "plaid_mutation", pending):
            raise PlaidFailure(
                400,
                "TRANSACTIONS_ERROR",
                "TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION",
                MUTATION_MESSAGE,
            )
    else:
        at = CursorPosition(0, ledger.size, 0, full, full)
    states = ledger.states(at.start, at.end)
    before = states[at.start] if at.start_full else recent_only(item, states[at.start])
    after = states[at.end] if at.end_full else recent_only(item, states[at.end])
    changes = ledger_diff(before, after)
    page = changes[at.offset : at.offset + count]
    has_more = at.offset + count < len(changes)
    if any(kind != "removed" for kind, _ in page) and fault_take(
        "plaid", item.item_id, "malformed", pending
    ):
        page = _malform(page)
    if has_more:
        following = CursorPosition(at.start, at.end, at.offset + count, at.start_full, at.end_full)
    else:
        following = CursorPosition(at.end, at.end, 0, at.end_full, at.end_full)
    return {
        "added": [entry for kind, entry in page if kind == "added"],
        "modified": [entry for kind, entry in page if kind == "modified"],
        "removed": [entry for kind, entry in page if kind == "removed"],
        "next_cursor": following.encode(item),
        "has_more": has_more,
        "accounts": item_accounts(item),
        "transactions_update_status": status,
    }


# --- Webhook verification key ---------------------------------------------------------------------


def _signing_key_stored() -> SigningKey:
    return signing_key_stored(WEBHOOK_KEY_PURPOSE, "ec")


def _ec_private(stored: SigningKey) -> ec.EllipticCurvePrivateKey:
    private = private_key_of(stored)
    if not isinstance(private, ec.EllipticCurvePrivateKey):
        raise TypeError("the stored webhook key is not an EC key")
    return private


def webhook_signing_key() -> tuple[str, ec.EllipticCurvePrivateKey]:
    """The sandbox's P-256 key for Plaid webhooks: (kid, private key), generated once and stored."""
    stored = _signing_key_stored()
    return stored.kid, _ec_private(stored)


def webhook_signing_key_rotate() -> str:
    """Expire the current webhook key (still served, with `expired_at`) and start a new one.

    Returns the new kid. Webhooks signed with the old key then carry an expired kid, which a
    receiver must refuse.
    """
    return signing_key_rotate(WEBHOOK_KEY_PURPOSE, "ec").kid


def _jwk(stored: SigningKey) -> dict:
    numbers = _ec_private(stored).public_key().public_numbers()

    def b64(value: int) -> str:
        return base64.urlsafe_b64encode(value.to_bytes(32, "big")).decode().rstrip("=")

    return {
        "alg": "ES256",
        "crv": "P-256",
        "kid": stored.kid,
        "kty": "EC",
        "use": "sig",
        "x": b64(numbers.x),
        "y": b64(numbers.y),
        "created_at": int(stored.created_at.timestamp()),
        "expired_at": int(stored.expired_at.timestamp()) if stored.expired_at else None,
    }


def webhook_public_jwk() -> dict:
    """The current public key as Plaid's /webhook_verification_key/get returns it (a JWK)."""
    return _jwk(_signing_key_stored())


def webhook_public_jwk_by_kid(kid: str) -> dict | None:
    """The JWK of a current or expired webhook key, or None for a kid the sandbox never made."""
    stored = signing_key_by_kid(WEBHOOK_KEY_PURPOSE, kid)
    return _jwk(stored) if stored is not None else None


@plaid_endpoint()
def webhook_verification_key_get(call: PlaidCall) -> dict:
    key_id = call.text("key_id")
    jwk = webhook_public_jwk_by_kid(key_id)
    if jwk is None:
        raise PlaidFailure(
            400,
            "INVALID_INPUT",
            "INVALID_WEBHOOK_VERIFICATION_KEY_ID",
            "invalid key_id provided",
        )
    return {"key": jwk}


# --- Link script ----------------------------------------------------------------------------------


@require_GET
def link_script(request: HttpRequest) -> HttpResponse:
    """An imitation of link-initialize.js: `Plaid.create({...}).open()` shows a sandbox dialog."""
    config = {
        "endpoint": request.build_absolute_uri(reverse("sandbox:plaid-link-internal-public-token")),
        "institutions": [
            {"institution_id": key, "name": value["name"]} for key, value in INSTITUTIONS.items()
        ],
    }
    # Escaped so the JSON cannot close a <script> element it may be inlined into.
    config_json = (
        json.dumps(config).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    )
    script = Template(LINK_SCRIPT.read_text()).render(Context({"config_json": config_json}))
    response = HttpResponse(script, content_type="application/javascript; charset=utf-8")
    response["Cache-Control"] = "no-store"
    return response
