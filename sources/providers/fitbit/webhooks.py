"""Google Health API webhooks: the subscriber handshake, the secret, the signature.

https://developers.google.com/health/webhooks: two verification probes (with our secret in
Authorization -> 201, without -> 401); notifications carry the secret and, where configured, an
ECDSA P-256 signature of the body (documented under two header names; both are accepted). They
name the person, the data type and the intervals, never values.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
from datetime import date, timedelta
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from ingestion.models import WebhookEvent
from ingestion.notifications import (
    connection_for_account,
    connection_window_fetch,
    event_concerns,
)
from ingestion.webhooks import IncomingEvent, WebhookReceiver, WebhookRejected
from sources.providers.fitbit.provider import Fitbit

SIGNATURE_HEADERS = ("X-HEALTHAPI-SIGNATURE", "GOOGLE-HEALTH-API-SIGNATURE")
STREAMS = {"steps": "steps", "heart-rate": "heart-rate", "sleep": "sleep"}


def _secret_matches(request: HttpRequest) -> bool:
    secret = settings.FITBIT_WEBHOOK_SECRET
    given = request.headers.get("Authorization", "")
    return bool(secret) and hmac.compare_digest(given.encode(), secret.encode())


def _public_key() -> ec.EllipticCurvePublicKey | None:
    return _load_public_key(settings.FITBIT_WEBHOOK_PUBLIC_KEY)


@functools.lru_cache(maxsize=4)
def _load_public_key(pem: str) -> ec.EllipticCurvePublicKey | None:
    # Parsed once per key, not on every notification.
    if not pem:
        return None
    key = serialization.load_pem_public_key(pem.encode())
    return key if isinstance(key, ec.EllipticCurvePublicKey) else None


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
        key = _public_key()
        if key is None or _is_probe(body):
            return
        signature = next(
            (request.headers[h] for h in SIGNATURE_HEADERS if h in request.headers), ""
        )
        try:
            key.verify(base64.b64decode(signature), body, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, binascii.Error, ValueError):
            raise WebhookRejected("bad signature") from None

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
