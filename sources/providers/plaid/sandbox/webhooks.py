"""Plaid's webhooks as the sandbox sends them: a JSON POST with a `Plaid-Verification` ES256 JWT
over the SHA-256 of the raw body, verifiable with the key served by
`/sandbox/plaid/webhook_verification_key/get`
(https://plaid.com/docs/api/webhooks/webhook-verification/)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from django.utils import timezone

from sources.sandbox.common import rfc3339
from sources.sandbox.webhooks import WebhookInputError, deliver, json_bytes

from .api import (
    HISTORICAL_UPDATE_COMPLETE,
    LOGIN_REQUIRED_DISPLAY,
    LOGIN_REQUIRED_MESSAGE,
    NOT_READY,
    item_by_id,
    plaid_error,
    webhook_signing_key,
    webhook_signing_key_rotate,
)

PLAID_VERIFICATION_HEADER = "Plaid-Verification"
_PLAID_ERROR_MESSAGES = {
    "ITEM_LOGIN_REQUIRED": (LOGIN_REQUIRED_MESSAGE, LOGIN_REQUIRED_DISPLAY),
    "USER_PERMISSION_REVOKED": (
        "the holder of this account has revoked their permission for your application to access it",
        "The holder of this account has revoked their permission for your application to access "
        "it.",
    ),
    "ACCESS_NOT_GRANTED": (
        "the user did not grant the necessary permissions for their account",
        None,
    ),
}


def plaid_webhook_error(error_code: str = "ITEM_LOGIN_REQUIRED", status: int = 400) -> dict:
    """A PlaidError as webhooks carry it (with `status`, which only webhooks have)."""
    message, display = _PLAID_ERROR_MESSAGES.get(
        error_code, (f"{error_code.lower().replace('_', ' ')}", None)
    )
    error = plaid_error("ITEM_ERROR", error_code, message, display, secrets.token_hex(8))
    error["status"] = status
    return error


def plaid_webhook_body(item_id: str, webhook_type: str, webhook_code: str, **fields: Any) -> dict:
    """A Plaid webhook body of the documented shape; `fields` add to or override the defaults.

    Defaults: TRANSACTIONS/SYNC_UPDATES_AVAILABLE gets `initial_update_complete` and
    `historical_update_complete` (both true); ITEM/ERROR an ITEM_LOGIN_REQUIRED `error`;
    ITEM/PENDING_EXPIRATION `consent_expiration_time` (in 7 days); ITEM/PENDING_DISCONNECT
    `reason` and `disconnect_time`; ITEM/USER_PERMISSION_REVOKED a USER_PERMISSION_REVOKED `error`.
    An `error` given as a string is an error code, wrapped into a PlaidError.
    """
    body: dict[str, Any] = {
        "webhook_type": webhook_type,
        "webhook_code": webhook_code,
        "item_id": item_id,
    }
    soon = rfc3339(timezone.now() + timedelta(days=7))
    kind = (webhook_type, webhook_code)
    if kind == ("TRANSACTIONS", "SYNC_UPDATES_AVAILABLE"):
        item = item_by_id(item_id, removed=None)
        status = item.update_status() if item is not None else HISTORICAL_UPDATE_COMPLETE
        body.update(
            initial_update_complete=status != NOT_READY,
            historical_update_complete=status == HISTORICAL_UPDATE_COMPLETE,
        )
    elif webhook_type == "TRANSACTIONS" and webhook_code in (
        "INITIAL_UPDATE",
        "HISTORICAL_UPDATE",
        "DEFAULT_UPDATE",
    ):
        # The legacy /transactions/get webhooks, still sent beside SYNC_UPDATES_AVAILABLE.
        body.update(error=None, new_transactions=0)
    elif kind == ("TRANSACTIONS", "TRANSACTIONS_REMOVED"):
        body.update(error=None, removed_transactions=[])
    elif kind == ("ITEM", "WEBHOOK_UPDATE_ACKNOWLEDGED"):
        item = item_by_id(item_id, removed=None)
        body.update(new_webhook_url=item.webhook if item is not None else "", error=None)
    elif kind == ("ITEM", "ERROR"):
        body["error"] = plaid_webhook_error("ITEM_LOGIN_REQUIRED")
    elif kind == ("ITEM", "PENDING_EXPIRATION"):
        body["consent_expiration_time"] = soon
    elif kind == ("ITEM", "PENDING_DISCONNECT"):
        body.update(reason="INSTITUTION_MIGRATION", disconnect_time=soon)
    elif kind == ("ITEM", "USER_PERMISSION_REVOKED"):
        body["error"] = plaid_webhook_error("USER_PERMISSION_REVOKED")
    body.update(fields)
    if isinstance(body.get("error"), str):
        body["error"] = plaid_webhook_error(body["error"])
    body.setdefault("environment", "sandbox")
    return body


def plaid_verification_header(
    body: bytes,
    *,
    iat: int | None = None,
    kid: str | None = None,
    alg: str = "ES256",
    key: Any = None,
) -> str:
    """The `Plaid-Verification` JWT for these exact body bytes.

    Header `{"alg","kid","typ":"JWT"}`, claims `{"iat","request_body_sha256"}`, signed with the
    sandbox's current key unless `key` is given. The parameters forge bad variants: an old `iat`,
    an unknown or expired `kid`, a key the kid does not name, another `alg`. HS* algorithms sign
    with `key` as the HMAC secret, or with the public key's PEM when `key` is a key object (the
    classic algorithm-confusion forgery); "none" leaves the token unsigned.
    """
    current_kid, current_key = webhook_signing_key()
    kid = kid if kid is not None else current_kid
    key = key if key is not None else current_key
    claims = {
        "iat": int(time.time()) if iat is None else int(iat),
        "request_body_sha256": hashlib.sha256(body).hexdigest(),
    }
    if alg.startswith("HS"):
        secret = key if isinstance(key, str | bytes) else _public_pem(key)
        return _hmac_jws(claims, {"alg": alg, "kid": kid, "typ": "JWT"}, secret)
    return jwt.encode(claims, None if alg == "none" else key, algorithm=alg, headers={"kid": kid})


def _public_pem(key: Any) -> bytes:
    public = key.public_key() if hasattr(key, "public_key") else key
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _hmac_jws(claims: dict, header: dict, secret: str | bytes) -> str:
    # Built by hand: pyjwt refuses to use a public key as an HMAC secret, which is the forgery.
    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    digests = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
    if header["alg"] not in digests:
        raise WebhookInputError(f"unsupported HMAC algorithm {header['alg']!r}")
    signing_input = ".".join(
        b64(json.dumps(part, separators=(",", ":"), sort_keys=True).encode())
        for part in (header, claims)
    )
    secret_bytes = secret.encode() if isinstance(secret, str) else secret
    mac = hmac.new(secret_bytes, signing_input.encode(), digests[header["alg"]]).digest()
    return f"{signing_input}.{b64(mac)}"


def plaid_signing_key_rotate() -> str:
    """Expire the current Plaid webhook key (still served, with `expired_at`); the new kid."""
    return webhook_signing_key_rotate()


def plaid_webhook_send(
    item_id: str,
    webhook_type: str,
    webhook_code: str,
    *,
    url: str | None = None,
    duplicate: bool = False,
    retry_delays: Sequence[float] | None = None,
    **fields: Any,
) -> list[int]:
    """POST a signed Plaid webhook to `url`, or to the webhook URL the item was linked with.

    The body is serialised once (pretty-printed, as Plaid's are) and the JWT covers those bytes.
    Raises WebhookInputError when no URL is given and the item has none.
    """
    if url is None:
        item = item_by_id(item_id, removed=None)
        if item is None or not item.webhook:
            raise WebhookInputError(f"Plaid item {item_id!r} has no webhook URL")
        url = item.webhook
    body = json_bytes(plaid_webhook_body(item_id, webhook_type, webhook_code, **fields), indent=2)
    headers = {
        "Content-Type": "application/json",
        PLAID_VERIFICATION_HEADER: plaid_verification_header(body),
    }
    return deliver(url, body, headers, duplicate=duplicate, retry_delays=retry_delays)
