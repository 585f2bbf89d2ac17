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
from django.conf import settings
from django.http import HttpRequest
from plaid.model.webhook_verification_key_get_request import WebhookVerificationKeyGetRequest

from ingestion.models import WebhookEvent
from ingestion.notifications import (
    connection_notice,
    connection_reauth_required,
    connection_sync_request,
    event_concerns,
)
from ingestion.webhooks import IncomingEvent, WebhookReceiver, WebhookRejected, body_digest
from sources.models import UserDataSource
from sources.providers.plaid.provider import REAUTH_ERROR_CODES, Plaid
from sources.services import connection_disconnect

MAX_AGE_S = 5 * 60
_keys: dict[str, tuple[dict[str, Any], float]] = {}
_keys_lock = threading.Lock()


def verification_key(kid: str) -> dict[str, Any] | None:
    """Plaid's public key for kid, cached; None when Plaid does not know it."""
    cached = _keys.get(kid)
    if cached and time.monotonic() - cached[1] < settings.PLAID_WEBHOOK_KEY_CACHE_S:
        return cached[0]
    try:
        response = Plaid.api().webhook_verification_key_get(
            WebhookVerificationKeyGetRequest(key_id=kid), _preload_content=False
        )
        key = json.loads(response.data)["key"]
    except plaid.ApiException:
        return None
    with _keys_lock:
        _keys[kid] = (key, time.monotonic())
    return key


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
        key = verification_key(str(header.get("kid", "")))
        if key is None:
            raise WebhookRejected("unknown signing key")
        if key.get("expired_at"):
            raise WebhookRejected("expired signing key")
        try:
            claims = jwt.decode(
                token,
                key=jwt.PyJWK(key, algorithm="ES256").key,
                algorithms=["ES256"],
                options={"require": ["iat"], "verify_iat": False},
            )
        except jwt.PyJWTError:
            raise WebhookRejected("bad signature") from None
        if time.time() - float(claims["iat"]) > MAX_AGE_S:
            raise WebhookRejected("stale signature")
        expected = str(claims.get("request_body_sha256", ""))
        if not hmac.compare_digest(expected, body_digest(body)):
            raise WebhookRejected("body does not match its signature")
        request.plaid_token = token  # type: ignore[attr-defined]

    def events(self, payload: Any, body: bytes) -> list[IncomingEvent]:
        kind = f"{payload['webhook_type']}.{payload['webhook_code']}"
        # Plaid bodies carry no event id and repeat themselves; the signed token (its iat and
        # the body) tells a redelivery from a new event.
        token = getattr(self.request, "plaid_token", "")
        key = hashlib.sha256(token.encode() + body).hexdigest()
        return [IncomingEvent(dedup_key=key, event_type=kind, payload=payload)]


def event_handle(event: WebhookEvent) -> None:
    payload = event.payload or {}
    connection = UserDataSource.objects.filter(
        provider=Plaid.id, external_account_id=str(payload.get("item_id", ""))
    ).first()
    if not event_concerns(event, connection):
        return
    kind = event.event_type
    if kind in ("TRANSACTIONS.SYNC_UPDATES_AVAILABLE", "TRANSACTIONS.DEFAULT_UPDATE"):
        connection_sync_request(connection)
    elif kind == "ITEM.ERROR":
        code = (payload.get("error") or {}).get("error_code")
        if code in REAUTH_ERROR_CODES:
            connection_reauth_required(connection)
        else:
            event.error = f"item error {code}"
    elif kind in ("ITEM.PENDING_EXPIRATION", "ITEM.PENDING_DISCONNECT"):
        connection_notice(
            connection,
            "Your bank will soon stop sharing data with Sibling. Reconnect to keep it current.",
        )
    elif kind == "ITEM.USER_PERMISSION_REVOKED":
        connection_disconnect(connection=connection, delete_data=False)
    else:
        event.error = f"unhandled event type {kind}"
