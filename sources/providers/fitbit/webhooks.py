"""Google Health API webhooks: the subscriber handshake, the secret, the signature.

https://developers.google.com/health/webhooks: two verification probes (with our secret in
Authorization -> 201, without -> 401); notifications carry the secret and an ECDSA P-256 signature
of the raw body in Tink's output format (documented under two header names; both are accepted),
verified with Google's Tink against its public keyset. They name the person, the data type and
the intervals, never values.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import requests
import tink
from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, JsonResponse
from tink import signature

from ingestion.models import WebhookEvent
from ingestion.notifications import (
    connection_for_account,
    connection_window_fetch,
    event_concerns,
)
from ingestion.webhooks import IncomingEvent, WebhookReceiver, WebhookRejected
from sources.providers.fitbit.provider import Fitbit

STREAMS = {"steps": "steps", "heart-rate": "heart-rate", "sleep": "sleep"}


def _secret_matches(request: HttpRequest) -> bool:
    secret = settings.FITBIT_WEBHOOK_SECRET
    given = request.headers.get("Authorization", "")
    return bool(secret) and hmac.compare_digest(given.encode(), secret.encode())


# --- Notification signatures ----------------------------------------------------------------------
#
# https://developers.google.com/health/webhooks#how_to_verify_the_signature: Google signs each
# notification's raw body with ECDSA P-256 / SHA-256 through Tink and publishes the public keys as
# a Tink JSON keyset. The header is base64 of Tink's output: a prefix byte (0x01 for Tink's TINK
# prefix), the 4-byte big-endian id of the signing key, then the DER signature.

SIGNATURE_HEADERS = ("GOOGLE-HEALTH-API-SIGNATURE", "X-HEALTHAPI-SIGNATURE")
# (connect, read) seconds of a keyset fetch: shorter than other provider calls
# (settings.SIBLING_PROVIDER_TIMEOUT_S), because a delivery waits on it.
KEYSET_FETCH_TIMEOUT_S = (3.0, 5.0)
# A keyset that could not be fetched is not asked for again by this process for this long.
KEYSET_FAILURE_BACKOFF_S = 10.0
MAX_KEYSET_BYTES = 256 * 1024
# Far above any P-256 DER signature plus its prefix (about 77 bytes): longer headers are refused
# before any decoding.
MAX_SIGNATURE_HEADER = 512
SHARED_KEYSET_KEY = "fitbit:webhook-keyset:"
REFETCH_BUDGET_KEY = "fitbit:webhook-keyset-refetch:"
TINK_PREFIXES = (0x01, 0x00)  # TINK, and LEGACY (Tink verifies both; Google uses TINK)

signature.register()


@dataclass(frozen=True)
class Keyset:
    """A parsed public keyset: Tink's verifier, and every key id it lists (enabled or not)."""

    verifier: signature.PublicKeyVerify
    key_ids: frozenset[int]
    text: str
    fetched_at: float


# Per process, by keyset URL; replaced only under _fetch_lock, read without it.
_keysets: dict[str, Keyset] = {}
_failed_until: dict[str, float] = {}
_refetch_spent_until = 0.0
_fetch_lock = threading.Lock()


class KeysetUnavailable(WebhookRejected):
    """No keyset could be had (Google unreachable): 503, which Google retries."""

    def __init__(self) -> None:
        super().__init__("signing keys temporarily unavailable", status=503)


def keyset_forget() -> None:
    """Drop this process's keysets and refetch budget (the shared cache keeps its copy)."""
    global _refetch_spent_until
    with _fetch_lock:
        _keysets.clear()
        _failed_until.clear()
        _refetch_spent_until = 0.0


def keyset_parse(text: str, *, fetched_at: float = 0.0) -> Keyset:
    """A Tink JSON public keyset; ValueError when it is not one (or holds a private key)."""
    try:
        listed = json.loads(text)
        key_ids = frozenset(int(key["keyId"]) for key in listed["key"])
        handle = tink.json_proto_keyset_format.parse_without_secret(text)
        # Tink builds the verifier from the ENABLED keys only: a DISABLED or DESTROYED key's
        # signatures do not verify, though its id is listed.
        verifier = handle.primitive(signature.PublicKeyVerify)
    except (tink.TinkError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"not a Tink JSON public keyset ({type(err).__name__})") from None
    return Keyset(verifier=verifier, key_ids=key_ids, text=text, fetched_at=fetched_at)


def _keyset_download(url: str) -> str:
    try:
        with requests.get(url, timeout=KEYSET_FETCH_TIMEOUT_S, stream=True) as response:
            response.raise_for_status()
            raw = response.raw.read(MAX_KEYSET_BYTES + 1, decode_content=True)
    except (requests.RequestException, OSError):
        raise KeysetUnavailable() from None
    if len(raw) > MAX_KEYSET_BYTES:
        raise KeysetUnavailable()
    return raw.decode("utf-8", errors="replace")


def _keyset_fetch(url: str) -> Keyset:
    """Download and parse the keyset, and share it with the other processes."""
    try:
        keyset = keyset_parse(_keyset_download(url), fetched_at=time.time())
    except (KeysetUnavailable, ValueError):
        _failed_until[url] = time.monotonic() + KEYSET_FAILURE_BACKOFF_S
        raise KeysetUnavailable() from None
    _keysets[url] = keyset
    cache.set(
        SHARED_KEYSET_KEY + _url_digest(url),
        {"text": keyset.text, "fetched_at": keyset.fetched_at},
        settings.FITBIT_WEBHOOK_KEYSET_CACHE_S,
    )
    return keyset


def _url_digest(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


def _fresh(keyset: Keyset | None) -> bool:
    return keyset is not None and (
        time.time() - keyset.fetched_at < settings.FITBIT_WEBHOOK_KEYSET_CACHE_S
    )


def _shared_keyset(url: str) -> Keyset | None:
    """The keyset another process fetched, if newer than this process's."""
    shared = cache.get(SHARED_KEYSET_KEY + _url_digest(url))
    held = _keysets.get(url)
    if not isinstance(shared, dict) or (held and shared.get("fetched_at", 0) <= held.fetched_at):
        return None
    try:
        keyset = keyset_parse(str(shared["text"]), fetched_at=float(shared["fetched_at"]))
    except (ValueError, KeyError, TypeError):
        return None
    _keysets[url] = keyset
    return keyset


def _refetch_allowed() -> bool:
    """Take the one refetch a minute that all processes share for unknown key ids."""
    global _refetch_spent_until
    if _refetch_spent_until > time.monotonic():
        return False
    if cache.add(f"{REFETCH_BUDGET_KEY}{int(time.time() // 60)}", 1, 120):
        return True
    # Until the minute turns, this process refuses without asking the shared cache.
    _refetch_spent_until = time.monotonic() + 60 - time.time() % 60
    return False


def keyset_for(url: str, key_id: int) -> Keyset:
    """The public keyset to verify a signature by `key_id` with.

    Held per process and shared through the cache for FITBIT_WEBHOOK_KEYSET_CACHE_S, then
    fetched again (keys rotate; one Google disabled must stop verifying). A key id the keyset
    does not list (Google rotated, or a forgery) is fetched again at most once a minute across
    all processes: the id comes from an unverified header, so each refetch is a call an attacker
    can ask for. Raises KeysetUnavailable when no keyset can be had.
    """
    held = _keysets.get(url)
    if _fresh(held) and key_id in held.key_ids:  # type: ignore[union-attr]
        return held  # type: ignore[return-value]
    # One fetch at a time per process: deliveries signed by a new key wait for the first one's
    # answer instead of each fetching.
    with _fetch_lock:
        held = _keysets.get(url)
        if not (_fresh(held) and key_id in held.key_ids):  # type: ignore[union-attr]
            held = _shared_keyset(url) or held
        if _fresh(held) and key_id in held.key_ids:  # type: ignore[union-attr]
            return held  # type: ignore[return-value]
        if _failed_until.get(url, 0.0) > time.monotonic():
            if held is None:
                raise KeysetUnavailable()
            return held
        if _fresh(held) and not _refetch_allowed():
            return held  # type: ignore[return-value]  # the key id stays unknown: refused
        try:
            return _keyset_fetch(url)
        except KeysetUnavailable:
            if held is None:
                raise
            return held  # the keyset as last fetched serves until Google answers again


def _signature_header(request: HttpRequest) -> str:
    return next((request.headers[h] for h in SIGNATURE_HEADERS if h in request.headers), "")


def signature_verify(header: str, body: bytes, keyset_url: str) -> None:
    """Check Tink's output (base64 in `header`) over the raw body; WebhookRejected if not."""
    if not header:
        raise WebhookRejected("missing signature")
    if len(header) > MAX_SIGNATURE_HEADER:
        raise WebhookRejected("malformed signature")
    try:
        raw = base64.b64decode(header, validate=True)
    except (binascii.Error, ValueError):
        raise WebhookRejected("malformed signature") from None
    # The prefix byte, 4 bytes of key id, then at least a DER SEQUENCE header.
    if len(raw) < 7 or raw[0] not in TINK_PREFIXES:
        raise WebhookRejected("malformed signature")
    key_id = int.from_bytes(raw[1:5], "big")
    keyset = keyset_for(keyset_url, key_id)
    if key_id not in keyset.key_ids:
        raise WebhookRejected("unknown signing key")
    try:
        keyset.verifier.verify(raw, body)
    except tink.TinkError:
        # A wrong body, a forgery, or a key that is no longer enabled.
        raise WebhookRejected("bad signature") from None


def _is_probe(body: bytes) -> bool:
    try:
        return json.loads(body) == {"type": "verification"}
    except (ValueError, RecursionError):
        return False


class FitbitWebhookReceiver(WebhookReceiver):
    provider_id = "fitbit"
    success_status = 204

    def verify(self, request: HttpRequest, body: bytes) -> None:
        if not _secret_matches(request):
            raise WebhookRejected("missing or wrong secret")
        if _is_probe(body):
            return  # the handshake is about the secret; it is answered, never stored
        signature_verify(_signature_header(request), body, Fitbit.url("webhook_keyset"))

    def intercept(self, request: HttpRequest, payload: Any) -> HttpResponse | None:
        if payload == {"type": "verification"}:
            return JsonResponse({}, status=201)  # the secret was checked in verify()
        return None

    def events(self, payload: Any, body: bytes) -> list[IncomingEvent]:
        # Documented as one object; batched arrays have been reported: accept both.
        items = payload if isinstance(payload, list) else [payload]
        events = []
        for item in items:
            data = item["data"]
            canonical = json.dumps(item, sort_keys=True, separators=(",", ":")).encode()
            events.append(
                IncomingEvent(
                    dedup_key=hashlib.sha256(canonical).hexdigest(),
                    event_type=f"{data['dataType']}.{data.get('operation', 'UPSERT')}",
                    payload=data,
                    # Notifications carry no id: an identical one is a redelivery only within
                    # this window; later it says the same data changed again.
                    dedup_window_s=settings.FITBIT_WEBHOOK_DEDUP_WINDOW_S,
                )
            )
        return events


def _boundary(value: Any) -> tuple[date, bool] | None:
    """A civil boundary's day, and whether it falls at midnight (so, as an end, excludes it)."""
    if isinstance(value, str):
        # The time of day is the 8 characters after "T" (any fraction or offset follows them).
        return date.fromisoformat(value[:10]), not value[11:19].strip("0:")
    if isinstance(value, dict) and isinstance(value.get("date"), dict):
        d, time = value["date"], value.get("time") or {}
        day = date(int(d["year"]), int(d["month"]), int(d["day"]))
        return day, not any(time.get(k) for k in ("hours", "minutes", "seconds", "nanos"))
    return None


def _first_boundary(civil: dict[str, Any], keys: tuple[str, ...]) -> tuple[date, bool] | None:
    return next((b for key in keys if (b := _boundary(civil.get(key))) is not None), None)


def _days(intervals: list[dict[str, Any]]) -> tuple[date, date]:
    """The civil days the intervals cover, first and last included.

    Intervals end exclusively: a civil span ending at midnight does not name the day that
    midnight begins. The civil span is the person's own days; the physical one (UTC instants,
    a day either side of them) serves only when no civil span is given.
    """
    days = []
    for interval in intervals:
        civil = interval.get("civilIso8601TimeInterval") or interval.get("civilDateTimeInterval")
        if isinstance(civil, dict):
            start = _first_boundary(civil, ("startTime", "startDateTime", "start"))
            end = _first_boundary(civil, ("endTime", "endDateTime", "end"))
            if start is not None:
                days.append(start[0])
            if end is not None:
                last, at_midnight = end
                if at_midnight and (start is None or last > start[0]):
                    last -= timedelta(days=1)
                days.append(last)
            if start is not None or end is not None:
                continue
        physical = interval.get("physicalTimeInterval") or {}
        for key in ("startTime", "endTime"):
            if isinstance(physical.get(key), str):
                days.append(date.fromisoformat(physical[key][:10]))
    if not days:
        raise ValueError("the notification names no interval")
    return min(days), max(days)


def event_handle(event: WebhookEvent) -> None:
    payload = event.payload or {}
    connection = connection_for_account(
        provider=Fitbit.id, external_account_id=str(payload.get("healthUserId", ""))
    )
    if not event_concerns(event, connection):
        return
    stream = STREAMS.get(str(payload.get("dataType", "")))
    if stream is None:
        event.error = f"unhandled data type {payload.get('dataType')}"
        return
    first, last = _days(payload.get("intervals") or [])
    # Queued and fetched by a task of its own: the drain never waits on the provider.
    if not connection_window_fetch(connection, stream=stream, first=first, last=last):
        event.error = "nothing to fetch: the named days are out of bounds or not syncing"
