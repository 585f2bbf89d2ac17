"""The sandbox as a webhook sender: Plaid webhooks, Gmail's Pub/Sub pushes, Google Health
notifications, each signed the way the real provider signs it.

- Plaid: a JSON POST with a `Plaid-Verification` ES256 JWT over the SHA-256 of the raw body,
  verifiable with the key served by `/sandbox/plaid/webhook_verification_key/get`
  (https://plaid.com/docs/api/webhooks/webhook-verification/).
- Gmail: the Pub/Sub push envelope with `Authorization: Bearer <RS256 OIDC token>`, verifiable with
  the JWKS served at `/sandbox/google/oauth2/v3/certs` (Google's is
  https://www.googleapis.com/oauth2/v3/certs).
- Google Health: the two-probe verification handshake, and notifications carrying the subscriber's
  secret in `Authorization` plus an ECDSA P-256 signature (base64 DER) over the raw body, whose
  public key is served as PEM at `/sandbox/google/health/webhook-public-key.pem`.

Every send POSTs the body bytes it signed, serialised once, with a 5 s timeout, and retries a
non-2xx (or no answer at all) after each delay of `retry_delays` (default `RETRY_DELAYS`, kept
short so tests stay fast; the real providers back off for minutes to days). `duplicate=True`
delivers the identical request a second time, as a redelivery. A send returns every status seen,
in order; 0 stands for an attempt that got no HTTP answer (refused, unreachable, timed out).

`new_activity` faults call `activity_webhooks_send`, which pushes for Plaid items linked with a
webhook URL and for watched Gmail mailboxes, unless settings.SIBLING_SANDBOX_SEND_WEBHOOKS is off.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import jwt
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from .common import json_body, json_response, parse_iso_date, rfc3339, stable_int
from .keys import private_key_of, signing_key_stored
from .models import GmailWatch, GoogleAccount, PlaidItem
from .plaid import (
    LOGIN_REQUIRED_DISPLAY,
    LOGIN_REQUIRED_MESSAGE,
    plaid_error,
    webhook_signing_key,
    webhook_signing_key_rotate,
)

logger = logging.getLogger(__name__)

# Waits before each retry; the number of delays is the number of retries.
RETRY_DELAYS: tuple[float, ...] = (0.1, 0.2, 0.4)
DELIVERY_TIMEOUT_S = 5

# --- Delivery -------------------------------------------------------------------------------------


class WebhookInputError(ValueError):
    """A send that cannot be built: an unknown item, no URL, a malformed interval..."""


def _post(url: str, body: bytes, headers: Mapping[str, str]) -> int:
    try:
        response = requests.post(
            url, data=body, headers=dict(headers), timeout=DELIVERY_TIMEOUT_S, allow_redirects=False
        )
    except requests.RequestException as err:
        logger.info("sandbox webhook to %s got no answer: %s", url, err)
        return 0
    return response.status_code


def _deliver(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    duplicate: bool = False,
    retry_delays: Sequence[float] | None = None,
) -> list[int]:
    """POST `body` until a 2xx or the retries run out; twice over for a duplicate."""
    delays = RETRY_DELAYS if retry_delays is None else tuple(retry_delays)
    statuses: list[int] = []
    for _ in range(2 if duplicate else 1):
        for attempt in range(len(delays) + 1):
            if attempt:
                time.sleep(delays[attempt - 1])
            status = _post(url, body, headers)
            statuses.append(status)
            if 200 <= status < 300:
                break
    return statuses


def default_receiver(provider: str) -> str | None:
    """This app's receiver for `provider` ("plaid", "gmail", "fitbit"), from SIBLING_PUBLIC_URL.

    Read at send time, so a test that points SIBLING_PUBLIC_URL at its live server is honoured.
    """
    base = str(getattr(settings, "SIBLING_PUBLIC_URL", "") or "").rstrip("/")
    return f"{base}/webhooks/{provider}/" if base else None


def _json_bytes(body: Any, *, indent: int | None = None) -> bytes:
    separators = None if indent else (",", ":")
    return json.dumps(body, indent=indent, separators=separators).encode()


# --- Plaid ----------------------------------------------------------------------------------------

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
        body.update(initial_update_complete=True, historical_update_complete=True)
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
        item = PlaidItem.objects.filter(item_id=item_id).first()
        if item is None or not item.webhook:
            raise WebhookInputError(f"Plaid item {item_id!r} has no webhook URL")
        url = item.webhook
    body = _json_bytes(plaid_webhook_body(item_id, webhook_type, webhook_code, **fields), indent=2)
    headers = {
        "Content-Type": "application/json",
        PLAID_VERIFICATION_HEADER: plaid_verification_header(body),
    }
    return _deliver(url, body, headers, duplicate=duplicate, retry_delays=retry_delays)


# --- Gmail: Pub/Sub push with a Google-signed OIDC token ------------------------------------------

SANDBOX_PUSH_SERVICE_ACCOUNT = "gmail-push@sibling-sandbox.iam.gserviceaccount.com"
PUSH_SUBSCRIPTION = "projects/sibling-sandbox/subscriptions/gmail-push"
GOOGLE_ISSUER = "https://accounts.google.com"
GOOGLE_OIDC_KEY_PURPOSE = "google-oidc"
# What Pub/Sub push requests identify themselves as.
PUBSUB_USER_AGENT = "APIs-Google; (+https://developers.google.com/webmasters/APIs-Google.html)"


def google_oidc_signing_key() -> tuple[str, rsa.RSAPrivateKey]:
    """The sandbox's RSA key for Google ID tokens: (kid, private key), generated once and stored."""
    stored = signing_key_stored(GOOGLE_OIDC_KEY_PURPOSE, "rsa")
    private = private_key_of(stored)
    if not isinstance(private, rsa.RSAPrivateKey):
        raise TypeError("the stored Google OIDC key is not an RSA key")
    return stored.kid, private


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def google_jwks() -> dict:
    """The public keys as https://www.googleapis.com/oauth2/v3/certs lists them."""
    kid, private = google_oidc_signing_key()
    numbers = private.public_key().public_numbers()
    return {
        "keys": [
            {
                "kty": "RSA",
                "alg": "RS256",
                "use": "sig",
                "kid": kid,
                "n": _b64url_uint(numbers.n),
                "e": _b64url_uint(numbers.e),
            }
        ]
    }


def _service_account_id(email: str) -> str:
    # Service accounts have a stable 21-digit unique id, used as `sub` and `azp`.
    return str(10**20 + stable_int("service-account", email) % (9 * 10**20))


def pubsub_oidc_token(
    *,
    audience: str,
    email: str = SANDBOX_PUSH_SERVICE_ACCOUNT,
    issuer: str = GOOGLE_ISSUER,
    lifetime_s: int = 3600,
    iat: int | None = None,
    key: Any = None,
    kid: str | None = None,
) -> str:
    """An RS256 ID token as Pub/Sub attaches to authenticated pushes.

    Claims aud, azp, email, email_verified, exp, iat, iss, sub. `iat`/`lifetime_s` make expired
    tokens, `key`/`kid` tokens Google's keys do not verify.
    """
    current_kid, current_key = google_oidc_signing_key()
    issued = int(time.time()) if iat is None else int(iat)
    account_id = _service_account_id(email)
    claims = {
        "aud": audience,
        "azp": account_id,
        "email": email,
        "email_verified": True,
        "exp": issued + lifetime_s,
        "iat": issued,
        "iss": issuer,
        "sub": account_id,
    }
    return jwt.encode(
        claims,
        key if key is not None else current_key,
        algorithm="RS256",
        headers={"kid": kid if kid is not None else current_kid},
    )


def _publish_time(moment: datetime) -> str:
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def gmail_push_body(
    email_address: str, history_id: int | str, *, message_id: str | None = None
) -> dict:
    """The Pub/Sub push envelope of a Gmail notification.

    `data` is base64url of `{"emailAddress", "historyId"}`; historyId keeps the type given (a JSON
    number for an int, a string for a str), since real notifications have carried both.
    """
    data = _json_bytes({"emailAddress": email_address, "historyId": history_id})
    message_id = message_id or str(10**15 + secrets.randbelow(9 * 10**15))
    published = _publish_time(timezone.now())
    return {
        "message": {
            "data": base64.urlsafe_b64encode(data).decode(),
            "messageId": message_id,
            "message_id": message_id,
            "publishTime": published,
            "publish_time": published,
        },
        "subscription": PUSH_SUBSCRIPTION,
    }


def gmail_push_send(
    email_address: str,
    *,
    url: str,
    audience: str,
    history_id: int | str | None = None,
    duplicate: bool = False,
    as_number: bool = False,
    retry_delays: Sequence[float] | None = None,
) -> list[int]:
    """POST a Gmail push to `url` with an OIDC bearer for `audience`.

    `history_id` defaults to the mailbox's current historyId; it is sent as a string, or as a JSON
    number with `as_number`. A duplicate redelivers the same messageId.
    """
    if history_id is None:
        from .gmail import Mailbox

        history_id = Mailbox.load(email_address).history_id
    try:
        value: int | str = int(history_id) if as_number else str(history_id)
    except ValueError as err:
        raise WebhookInputError(f"historyId {history_id!r} is not a number") from err
    body = _json_bytes(gmail_push_body(email_address, value))
    headers = {
        "Content-Type": "application/json",
        "Authorization": f"Bearer {pubsub_oidc_token(audience=audience)}",
        "User-Agent": PUBSUB_USER_AGENT,
    }
    return _deliver(url, body, headers, duplicate=duplicate, retry_delays=retry_delays)


def gmail_push_target(email: str) -> tuple[str, str] | None:
    """(push endpoint, audience) for a mailbox with an active watch, or None.

    What the watch recorded wins; otherwise this app's receiver, with settings.GMAIL_PUSH_AUDIENCE
    (when set) or the endpoint itself as the audience, as Pub/Sub defaults it.
    """
    watch = GmailWatch.objects.filter(email=email.lower(), expires_at__gt=timezone.now()).first()
    if watch is None:
        return None
    endpoint = watch.push_endpoint or default_receiver("gmail")
    if not endpoint:
        return None
    audience = watch.audience or (
        "" if watch.push_endpoint else str(getattr(settings, "GMAIL_PUSH_AUDIENCE", "") or "")
    )
    return endpoint, audience or endpoint


def gmail_push_endpoint_set(email: str, url: str, audience: str | None = None) -> bool:
    """Point a watched mailbox's pushes at `url` (the Pub/Sub subscription's push endpoint).

    False when the mailbox has no watch. `audience` defaults to `url`.
    """
    return bool(
        GmailWatch.objects.filter(email=email.lower()).update(
            push_endpoint=url, audience=audience or ""
        )
    )


# --- Google Health API webhooks -------------------------------------------------------------------

HEALTH_KEY_PURPOSE = "google-health-webhook"
HEALTH_VERIFIER_USER_AGENT = "Google-Health-API-Webhooks-Verifier"
# Both names appear in Google's documents; a receiver should accept either.
HEALTH_SIGNATURE_HEADERS = ("X-HEALTHAPI-SIGNATURE", "GOOGLE-HEALTH-API-SIGNATURE")


def health_signing_key() -> ec.EllipticCurvePrivateKey:
    """The sandbox's P-256 key for Google Health notification signatures, generated once."""
    private = private_key_of(signing_key_stored(HEALTH_KEY_PURPOSE, "ec"))
    if not isinstance(private, ec.EllipticCurvePrivateKey):
        raise TypeError("the stored Google Health key is not an EC key")
    return private


def health_public_key_pem() -> str:
    """The public half, SubjectPublicKeyInfo PEM (what a receiver configures)."""
    return (
        health_signing_key()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def health_verification_probe(url: str, secret: str) -> tuple[int, int]:
    """The subscriber handshake: (status with the secret, status without it).

    A subscriber passes with 201 (or 200) and then 401 (or 403). 0 means no answer.
    """
    body = _json_bytes({"type": "verification"})
    headers = {"Content-Type": "application/json", "User-Agent": HEALTH_VERIFIER_USER_AGENT}
    with_secret = _post(url, body, {**headers, "Authorization": secret})
    without_secret = _post(url, body, headers)
    return with_secret, without_secret


def _health_offset(health_user_id: str) -> int:
    """The UTC offset (seconds) of the sandbox account behind a healthUserId; 0 if unknown."""
    from .health import HealthAccount

    for email in GoogleAccount.objects.values_list("email", flat=True):
        account = HealthAccount.of(email)
        if account.health_user_id == health_user_id:
            return account.offset
    return 0


def _civil_date_time(day: date) -> dict:
    return {
        "date": {"year": day.year, "month": day.month, "day": day.day},
        "time": {"hours": 0, "minutes": 0},
    }


def health_notification_body(
    health_user_id: str,
    data_type: str,
    intervals: list[tuple[str, str]],
    *,
    operation: str = "UPSERT",
    subscription_name: str = "sibling-sandbox",
    utc_offset_s: int | None = None,
) -> dict:
    """A Google Health notification for whole civil days.

    Each interval is (first_day, last_day), "YYYY-MM-DD", inclusive; it becomes the days' civil
    span (midnight to the midnight after the last day) and the physical span in the user's UTC
    offset (`utc_offset_s`, by default the sandbox account's, else UTC).
    """
    offset = _health_offset(health_user_id) if utc_offset_s is None else utc_offset_s
    rendered = []
    for pair in intervals:
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise WebhookInputError("each interval is a (first_day, last_day) pair")
        first, last = parse_iso_date(str(pair[0])), parse_iso_date(str(pair[1]))
        if first is None or last is None or last < first:
            raise WebhookInputError(f"bad interval {pair!r}: two YYYY-MM-DD days, in order")
        end = last + timedelta(days=1)
        zone = timedelta(seconds=offset)
        start_utc = datetime(first.year, first.month, first.day, tzinfo=UTC) - zone
        end_utc = datetime(end.year, end.month, end.day, tzinfo=UTC) - zone
        rendered.append(
            {
                "physicalTimeInterval": {
                    "startTime": rfc3339(start_utc),
                    "endTime": rfc3339(end_utc),
                },
                "civilDateTimeInterval": {
                    "startDateTime": _civil_date_time(first),
                    "endDateTime": _civil_date_time(end),
                },
                "civilIso8601TimeInterval": {
                    "startTime": f"{first.isoformat()}T00:00:00",
                    "endTime": f"{end.isoformat()}T00:00:00",
                },
            }
        )
    return {
        "data": {
            "version": "1",
            "clientProvidedSubscriptionName": subscription_name,
            "healthUserId": health_user_id,
            "operation": operation,
            "dataType": data_type,
            "intervals": rendered,
        }
    }


def health_signature(body: bytes, key: Any = None) -> str:
    """Base64 of the DER ECDSA P-256 SHA-256 signature over the raw body."""
    private = key if key is not None else health_signing_key()
    return base64.b64encode(private.sign(body, ec.ECDSA(hashes.SHA256()))).decode()


def health_webhook_send(
    url: str,
    secret: str | None,
    body: dict | list,
    *,
    signature_header: str | None = "X-HEALTHAPI-SIGNATURE",
    duplicate: bool = False,
    retry_delays: Sequence[float] | None = None,
) -> list[int]:
    """POST a Google Health notification (or a batch, as a list) with secret and signature.

    `secret` goes in `Authorization` as is (None: no header); `signature_header` names the header
    that carries the signature (None: unsigned).
    """
    raw = _json_bytes(body)
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["Authorization"] = secret
    if signature_header:
        headers[signature_header] = health_signature(raw)
    return _deliver(url, raw, headers, duplicate=duplicate, retry_delays=retry_delays)


# --- After new activity ---------------------------------------------------------------------------


def activity_webhooks_send(provider: str, account: str) -> list[int]:
    """What the provider would push after new activity; never raises (best effort).

    Plaid: SYNC_UPDATES_AVAILABLE to the item's webhook URL, when it has one. Google: a Gmail push
    to the watch's endpoint, when the mailbox is watched. Off with SIBLING_SANDBOX_SEND_WEBHOOKS.
    """
    if not getattr(settings, "SIBLING_SANDBOX_SEND_WEBHOOKS", True):
        return []
    try:
        if provider == "plaid":
            item = PlaidItem.objects.filter(item_id=account, removed=False).first()
            if item is not None and item.webhook:
                return plaid_webhook_send(
                    item.item_id, "TRANSACTIONS", "SYNC_UPDATES_AVAILABLE", url=item.webhook
                )
        elif provider == "google":
            target = gmail_push_target(account)
            if target is not None:
                return gmail_push_send(account, url=target[0], audience=target[1])
    except Exception:
        # A receiver that is down or a broken send must not fail the fault that caused it.
        logger.warning("sandbox webhook after new activity failed", exc_info=True)
    return []


# --- Views ----------------------------------------------------------------------------------------


@require_GET
def google_certs(request: HttpRequest) -> HttpResponse:
    """Google's OAuth2 certs (JWKS) for the sandbox's ID tokens."""
    response = json_response(google_jwks())
    response["Cache-Control"] = "public, max-age=300"
    return response


@require_GET
def health_public_key(request: HttpRequest) -> HttpResponse:
    """The Google Health notification signing key, PEM."""
    return HttpResponse(health_public_key_pem(), content_type="application/x-pem-file")


def _flag(body: dict, name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise WebhookInputError(f"{name} must be true or false")
    return value


def _text(body: dict, name: str, default: str | None = None) -> str:
    value = body.get(name, default)
    if not isinstance(value, str) or not value:
        raise WebhookInputError(f"{name} is required (a non-empty string)")
    return value


def _control_plaid(body: dict, url: str) -> dict:
    item_id = _text(body, "item_id")
    if not PlaidItem.objects.filter(item_id=item_id).exists():
        raise WebhookInputError(f"unknown Plaid item {item_id!r}")
    fields = body.get("fields") or {}
    if not isinstance(fields, dict):
        raise WebhookInputError("fields must be an object")
    reserved = sorted({"url", "duplicate", "retry_delays"} & set(fields))
    if reserved:
        raise WebhookInputError(f"fields cannot set {', '.join(reserved)}")
    statuses = plaid_webhook_send(
        item_id,
        _text(body, "webhook_type", "TRANSACTIONS"),
        _text(body, "webhook_code", "SYNC_UPDATES_AVAILABLE"),
        url=url,
        duplicate=_flag(body, "duplicate"),
        **fields,
    )
    return {"statuses": statuses}


def _control_gmail(body: dict, url: str) -> dict:
    email = _text(body, "email").lower()
    history_id = body.get("history_id")
    if history_id is not None and (
        isinstance(history_id, bool) or not isinstance(history_id, int | str)
    ):
        raise WebhookInputError("history_id must be a number or a string")
    audience = str(getattr(settings, "GMAIL_PUSH_AUDIENCE", "") or "") or url
    statuses = gmail_push_send(
        email,
        url=url,
        audience=audience,
        history_id=history_id,
        duplicate=_flag(body, "duplicate"),
        as_number=_flag(body, "as_number"),
    )
    return {"statuses": statuses}


def _control_health(body: dict, url: str) -> dict:
    secret = body.get("secret", getattr(settings, "FITBIT_WEBHOOK_SECRET", None))
    if secret is not None and not isinstance(secret, str):
        raise WebhookInputError("secret must be a string")
    kind = body.get("kind", "notification")
    if kind == "verification":
        if not secret:
            raise WebhookInputError("secret is required for the verification handshake")
        with_secret, without_secret = health_verification_probe(url, secret)
        return {"statuses": [with_secret, without_secret]}
    if kind != "notification":
        raise WebhookInputError("kind must be 'notification' or 'verification'")
    health_user_id = body.get("health_user_id")
    if health_user_id is None:
        from .health import HealthAccount

        health_user_id = HealthAccount.of(_text(body, "email").lower()).health_user_id
    if not isinstance(health_user_id, str) or not health_user_id:
        raise WebhookInputError("health_user_id must be a non-empty string")
    intervals = body.get("intervals")
    if intervals is None:
        today = timezone.now().date().isoformat()
        intervals = [[today, today]]
    if not isinstance(intervals, list) or not intervals:
        raise WebhookInputError("intervals must be a non-empty list of [first_day, last_day]")
    operation = _text(body, "operation", "UPSERT")
    if operation not in ("UPSERT", "DELETE"):
        raise WebhookInputError("operation must be UPSERT or DELETE")
    notification = health_notification_body(
        health_user_id, _text(body, "data_type", "steps"), intervals, operation=operation
    )
    header = body.get("signature_header", HEALTH_SIGNATURE_HEADERS[0])
    if header is not None and header not in HEALTH_SIGNATURE_HEADERS:
        raise WebhookInputError(
            f"signature_header must be one of {', '.join(HEALTH_SIGNATURE_HEADERS)} or null"
        )
    statuses = health_webhook_send(
        url,
        secret,
        [notification] if _flag(body, "batch") else notification,
        signature_header=header,
        duplicate=_flag(body, "duplicate"),
    )
    return {"statuses": statuses}


_CONTROLS = {
    "plaid": ("plaid", _control_plaid),
    "gmail": ("gmail", _control_gmail),
    "health": ("fitbit", _control_health),
}


@csrf_exempt
@require_POST
def webhooks_api(request: HttpRequest) -> HttpResponse:
    """Send one provider webhook to this app's receiver (SIBLING_PUBLIC_URL + /webhooks/<p>/).

    JSON body, by `provider`:

    - `"plaid"`: `item_id` (required, a sandbox item), `webhook_type` (default "TRANSACTIONS"),
      `webhook_code` (default "SYNC_UPDATES_AVAILABLE"), `fields` (object merged into the body,
      e.g. `{"error": "ITEM_LOGIN_REQUIRED"}`), `duplicate` (bool).
    - `"gmail"`: `email` (required), `history_id` (number or string; default the mailbox's
      current one), `as_number` (bool: historyId as a JSON number), `duplicate` (bool). The OIDC
      audience is settings.GMAIL_PUSH_AUDIENCE when set, else the receiver URL.
    - `"health"`: `kind` ("notification", default, or "verification": the two-probe handshake),
      `secret` (the Authorization value; default settings.FITBIT_WEBHOOK_SECRET), `email` or
      `health_user_id`, `data_type` (default "steps"), `intervals` (list of [first_day, last_day],
      "YYYY-MM-DD"; default today), `operation` ("UPSERT" or "DELETE"), `signature_header`
      ("X-HEALTHAPI-SIGNATURE" (default), "GOOGLE-HEALTH-API-SIGNATURE" or null for unsigned),
      `batch` (bool: send a one-element array), `duplicate` (bool).

    Answers `{"ok": true, "provider", "url", "statuses": [...]}` with the receiver's statuses
    (0: no answer); 400 for bad input; 502 when the send itself broke.
    """
    body = json_body(request)
    if body is None:
        return json_response({"error": "body must be a JSON object"}, status=400)
    provider = body.get("provider")
    if provider not in _CONTROLS:
        return json_response(
            {"error": f"provider must be one of {', '.join(_CONTROLS)}"}, status=400
        )
    receiver, control = _CONTROLS[provider]
    url = default_receiver(receiver)
    if url is None:
        return json_response({"error": "settings.SIBLING_PUBLIC_URL is not set"}, status=400)
    try:
        result = control(body, url)
    except WebhookInputError as err:
        return json_response({"error": str(err)}, status=400)
    except Exception as err:
        logger.exception("sandbox webhook send failed")
        return json_response({"error": f"the send failed: {type(err).__name__}"}, status=502)
    return json_response({"ok": True, "provider": provider, "url": url, **result})
