"""Plaid webhooks: the Plaid-Verification JWT, then what each event asks.

https://plaid.com/docs/api/webhooks/webhook-verification/
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from typing import Any

import jwt
import plaid
import urllib3
from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest
from plaid.model.webhook_verification_key_get_request import WebhookVerificationKeyGetRequest

from ingestion.errors import error_code_safe
from ingestion.models import WebhookEvent
from ingestion.notifications import (
    EventHandler,
    connection_for_account,
    connection_notice,
    connection_reauth_required,
    connection_sync_request,
    event_dispatch,
)
from ingestion.webhooks import IncomingEvent, WebhookReceiver, WebhookRejected, body_digest
from sources.models import UserDataSource
from sources.providers.plaid.errors import REAUTH_ERROR_CODES
from sources.providers.plaid.provider import Plaid
from sources.services import connection_disconnect
from sources.signals import EXPIRING

Status = UserDataSource.Status
MAX_AGE_S = 5 * 60
# (connect, read) seconds of a key fetch: shorter than every other provider call
# (settings.SIBLING_PROVIDER_TIMEOUT_S), because Plaid's delivery waits on it; a key that cannot
# be fetched in time is a 503, which Plaid retries.
KEY_FETCH_TIMEOUT_S = (3.0, 5.0)
# How far ahead of our clock a genuine iat may be (Plaid's clock and ours differ a little).
CLOCK_SKEW_S = 60
MAX_KID_LENGTH = 200
BUDGET_KEY = "plaid:webhook-key-fetches:"
UNKNOWN_KID_KEY = "plaid:webhook-unknown-kid:"

# Per process: the keys Plaid gave (kid -> (jwk, when fetched)), the kids it did not know
# (kid -> until when), and until when this process knows the shared fetch budget is spent. The
# shared cache (sibling.cache) holds the unknown kids and the budget for every process. They
# change only under _fetch_lock; a cached key is read without it.
_keys: dict[str, tuple[dict[str, Any], float]] = {}
_unknown: dict[str, float] = {}
_budget_spent_until = 0.0
_fetch_lock = threading.Lock()


class KeyUnavailable(WebhookRejected):
    """The key could not be fetched now (budget spent, Plaid unreachable): 503, Plaid retries."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=503)


def _minute() -> int:
    return int(time.time() // 60)


def _kid_digest(kid: str) -> str:
    return hashlib.sha256(kid.encode()).hexdigest()


def _kid_known_unknown(kid: str) -> bool:
    until = _unknown.get(kid)
    if until is not None:
        if until > time.monotonic():
            return True
        _unknown.pop(kid, None)
    if cache.get(UNKNOWN_KID_KEY + _kid_digest(kid)):
        _unknown[kid] = time.monotonic() + settings.PLAID_WEBHOOK_UNKNOWN_KID_S
        return True
    return False


def _kid_remember_unknown(kid: str) -> None:
    ttl = settings.PLAID_WEBHOOK_UNKNOWN_KID_S
    # An expired kid leaves only when asked for again: a bound, the shared cache has the rest.
    if len(_unknown) > 10_000:
        _unknown.clear()
    _unknown[kid] = time.monotonic() + ttl
    cache.set(UNKNOWN_KID_KEY + _kid_digest(kid), 1, ttl)


def _fetch_allowed() -> bool:
    """Take one key fetch from the budget shared by every process (per minute)."""
    global _budget_spent_until
    if _budget_spent_until > time.monotonic():
        return False
    key = f"{BUDGET_KEY}{_minute()}"
    cache.add(key, 0, 120)
    try:
        used = cache.incr(key)
    except ValueError:  # expired in between: count this fetch in a fresh window
        cache.add(key, 1, 120)
        used = 1
    if used > settings.PLAID_WEBHOOK_KEY_FETCHES_PER_MIN:
        # Until the minute turns, this process refuses without asking the database.
        _budget_spent_until = time.monotonic() + 60 - time.time() % 60
        return False
    return True


def _key_fetch(kid: str) -> dict[str, Any] | None:
    """One call to /webhook_verification_key/get; None when Plaid does not know the kid."""
    try:
        response = Plaid.api().webhook_verification_key_get(
            WebhookVerificationKeyGetRequest(key_id=kid),
            _preload_content=False,
            _request_timeout=KEY_FETCH_TIMEOUT_S,
        )
        return json.loads(response.data)["key"]
    except plaid.ApiException as err:
        if err.status is not None and 400 <= err.status < 500:
            return None
        raise KeyUnavailable("verification key temporarily unavailable") from None
    except (urllib3.exceptions.HTTPError, OSError, ValueError, KeyError):
        raise KeyUnavailable("verification key temporarily unavailable") from None


def verification_key(kid: str) -> dict[str, Any] | None:
    """Plaid's public key for kid, cached; None when Plaid does not know it.

    The kid comes from a header nobody has verified yet, so each fetch is an outbound call an
    attacker can ask for: unknown kids are remembered for PLAID_WEBHOOK_UNKNOWN_KID_S, and all
    processes together fetch at most PLAID_WEBHOOK_KEY_FETCHES_PER_MIN keys a minute (beyond
    that, KeyUnavailable: 503, which Plaid retries). A known key is fetched again after
    PLAID_WEBHOOK_KEY_CACHE_S to learn whether it has expired since; while Plaid cannot answer
    that, the key as last fetched serves.
    """
    cached = _keys.get(kid)
    if cached and time.monotonic() - cached[1] < settings.PLAID_WEBHOOK_KEY_CACHE_S:
        return cached[0]
    # One fetch at a time per process: concurrent deliveries signed with a new key wait for the
    # first one's answer instead of each spending the budget (fetches are rare; cached keys
    # never wait here).
    with _fetch_lock:
        return _verification_key_fetch(kid)


def _verification_key_fetch(kid: str) -> dict[str, Any] | None:
    cached = _keys.get(kid)
    if cached and time.monotonic() - cached[1] < settings.PLAID_WEBHOOK_KEY_CACHE_S:
        return cached[0]  # fetched while this delivery waited
    if cached is None and _kid_known_unknown(kid):
        return None
    try:
        if not _fetch_allowed():
            raise KeyUnavailable("too many verification key requests; retry later")
        key = _key_fetch(kid)
    except KeyUnavailable:
        if cached is not None:
            # A re-check Plaid cannot answer now (budget spent, unreachable): the key as last
            # fetched serves, its expiry still checked, until Plaid answers again.
            return cached[0]
        raise
    if key is None:
        _keys.pop(kid, None)
        _kid_remember_unknown(kid)
    else:
        _keys[kid] = (key, time.monotonic())
    return key


def _key_expired(key: dict[str, Any]) -> bool:
    expired_at = key.get("expired_at")
    if expired_at in (None, "", 0):
        return False
    try:
        return float(expired_at) <= time.time()
    except (TypeError, ValueError):
        return True


class PlaidWebhookReceiver(WebhookReceiver):
    provider_id = "plaid"

    def verify(self, request: HttpRequest, body: bytes) -> None:
        token = request.headers.get("Plaid-Verification", "")
        if not token:
            raise WebhookRejected("missing Plaid-Verification header")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise WebhookRejected("malformed Plaid-Verification header") from None
        if header.get("alg") != "ES256":
            raise WebhookRejected("unexpected signing algorithm")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_LENGTH:
            raise WebhookRejected("malformed Plaid-Verification header")
        key = verification_key(kid)
        if key is None:
            raise WebhookRejected("unknown signing key")
        # Checked on every use, cached or not: a key may expire while it is cached.
        if _key_expired(key):
            raise WebhookRejected("expired signing key")
        try:
            claims = jwt.decode(
                token,
                key=jwt.PyJWK(key, algorithm="ES256").key,
                algorithms=["ES256"],
                options={"require": ["iat"], "verify_iat": False},
            )
            issued = float(claims["iat"])
        except (jwt.PyJWTError, TypeError, ValueError):
            raise WebhookRejected("bad signature") from None
        now = time.time()
        if now - issued > MAX_AGE_S:
            raise WebhookRejected("stale signature")
        if issued - now > CLOCK_SKEW_S:
            raise WebhookRejected("signature issued in the future")
        expected = str(claims.get("request_body_sha256", ""))
        if not hmac.compare_digest(expected, body_digest(body)):
            raise WebhookRejected("body does not match its signature")
        request.plaid_claims = claims  # type: ignore[attr-defined]

    def events(self, payload: Any, body: bytes) -> list[IncomingEvent]:
        kind = f"{payload['webhook_type']}.{payload['webhook_code']}"
        # Plaid bodies carry no event id and repeat themselves; the verified claims (when it was
        # signed, and the body's hash) tell a redelivery from a new event. Not the token text:
        # an ECDSA signature has a second valid encoding, so a re-signed copy of a genuine token
        # would pass as new.
        claims = getattr(self.request, "plaid_claims", {})
        material = json.dumps(
            [claims.get("iat"), str(claims.get("request_body_sha256", ""))], separators=(",", ":")
        )
        key = hashlib.sha256(material.encode()).hexdigest()
        return [IncomingEvent(dedup_key=key, event_type=kind, payload=payload)]


def _sync_request(event: WebhookEvent, connection: UserDataSource) -> None:
    connection_sync_request(connection)


def _item_error(event: WebhookEvent, connection: UserDataSource) -> None:
    error = (event.payload or {}).get("error")
    code = error_code_safe(error.get("error_code") if isinstance(error, dict) else "")
    if code in REAUTH_ERROR_CODES:
        connection_reauth_required(connection)
    else:
        event.error = f"item error {code}"


def _expiry_notice(event: WebhookEvent, connection: UserDataSource) -> None:
    connection_notice(
        connection,
        "Your bank will soon stop sharing data with Sibling. Reconnect to keep it current.",
        change=EXPIRING,
    )


def _permission_revoked(event: WebhookEvent, connection: UserDataSource) -> None:
    connection_disconnect(connection=connection, delete_data=False)


def _login_repaired(event: WebhookEvent, connection: UserDataSource) -> None:
    """The Item works again without Link (the person fixed it at the bank, or on another app
    using Plaid): no sign-in is needed any more, and a sync catches up."""
    repaired = (
        UserDataSource.objects.filter(pk=connection.pk, status=Status.REAUTH_REQUIRED).update(
            status=Status.ACTIVE, last_error="", consecutive_failures=0
        )
        > 0
    )
    if repaired:
        connection.refresh_from_db()
    connection_sync_request(connection)


def _new_accounts(event: WebhookEvent, connection: UserDataSource) -> None:
    connection_notice(
        connection,
        "Your bank has new accounts. Reconnect to choose whether Sibling reads them.",
    )


def _acknowledged(event: WebhookEvent, connection: UserDataSource) -> None:
    """Plaid confirms the Item's new webhook URL: nothing to do."""


# "<webhook_type>.<webhook_code>" -> what it asks: https://plaid.com/docs/api/webhooks/
# The legacy TRANSACTIONS codes (meant for /transactions/get) are still sent beside
# SYNC_UPDATES_AVAILABLE; each one also means "there is something to sync".
HANDLERS: dict[str, EventHandler] = {
    "TRANSACTIONS.SYNC_UPDATES_AVAILABLE": _sync_request,
    "TRANSACTIONS.INITIAL_UPDATE": _sync_request,
    "TRANSACTIONS.HISTORICAL_UPDATE": _sync_request,
    "TRANSACTIONS.DEFAULT_UPDATE": _sync_request,
    "TRANSACTIONS.TRANSACTIONS_REMOVED": _sync_request,
    "ITEM.ERROR": _item_error,
    "ITEM.LOGIN_REPAIRED": _login_repaired,
    "ITEM.NEW_ACCOUNTS_AVAILABLE": _new_accounts,
    "ITEM.PENDING_EXPIRATION": _expiry_notice,
    "ITEM.PENDING_DISCONNECT": _expiry_notice,
    "ITEM.USER_PERMISSION_REVOKED": _permission_revoked,
    "ITEM.WEBHOOK_UPDATE_ACKNOWLEDGED": _acknowledged,
}


def event_handle(event: WebhookEvent) -> None:
    payload = event.payload or {}
    connection = connection_for_account(
        provider=Plaid.id, external_account_id=str(payload.get("item_id", ""))
    )
    event_dispatch(event, connection, HANDLERS)
