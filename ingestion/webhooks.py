"""Receiving pushed events: verify against the raw body, store, answer at once, process after.

Each provider's receiver (``sources/providers/<id>/webhooks.py``) subclasses
:class:`WebhookReceiver` and says how to verify a delivery and what events it carries; this
module does the rest once: the body limit, JSON parsing, the dedup key, storing, enqueueing, and
the answers (401 bad signature or token, 400 malformed JSON, 413 body over 1 MB, 405 wrong
method, 2xx for duplicates and for events that concern no one; never a 500).

What a forged delivery costs is bounded: it is refused before anything is stored, and counted in
the rejection log (:class:`~ingestion.models.WebhookRejection`) by one atomic upsert into a row
per provider, reason, sender address and hour, which expires. Processed events expire after
SIBLING_WEBHOOK_RETENTION_DAYS (a TTL index on ``expires_at``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from django.conf import settings
from django.db import IntegrityError
from django.db.models import F, Q
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.module_loading import import_string
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from django_q.conf import Conf
from django_q.tasks import async_task
from pymongo.errors import DuplicateKeyError, PyMongoError

from ingestion.errors import SyncError
from ingestion.models import WebhookEvent, WebhookRejection
from sibling import mongo
from sibling.queue import broker
from sibling.throttles import client_address
from sibling.tracing import enabled as tracing_enabled
from sibling.tracing import span, span_continued, trace_carrier
from sibling.writes import model_insert
from sources.providers.base import ProviderError

logger = logging.getLogger(__name__)
MAX_BODY_BYTES = 1_000_000
STALE_CLAIM = timedelta(minutes=10)
Status = WebhookEvent.Status
# With tracing on, a stored event carries its receipt's trace context under this key, beside
# the model's fields (the ORM neither reads nor writes it), so processing continues that trace.
TRACE_KEY = "trace"


class WebhookRejected(Exception):
    """The delivery is refused with ``status``; the message is safe to send back."""

    def __init__(self, message: str, *, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class IncomingEvent:
    dedup_key: str
    event_type: str
    payload: Any
    user_id: Any = None  # when the sender is known (the events API)
    # Deliveries with the same key are one event only within this many seconds of the first;
    # None: forever (the key names one event, e.g. a provider's event id).
    dedup_window_s: int | None = None


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def webhook_event_store(
    *, provider: str, event: IncomingEvent, enqueue: bool = True
) -> tuple[WebhookEvent, bool]:
    """Store a verified event (encrypted) and have it processed; (event, False) for a
    redelivery, which only counts another delivery on the first one."""
    with span("webhook.store", provider=provider, event_type=event.event_type[:100]):
        return _event_store(provider=provider, event=event, enqueue=enqueue)


def _event_store(
    *, provider: str, event: IncomingEvent, enqueue: bool
) -> tuple[WebhookEvent, bool]:
    key = event.dedup_key[:128]
    stored = WebhookEvent(
        provider=provider,
        dedup_key=key,
        event_type=event.event_type[:100],
        received_at=timezone.now(),
        verified=True,
        status=Status.ACCEPTED,
        user_id=event.user_id,
        payload=event.payload,
    )
    carrier = trace_carrier()
    extra = {TRACE_KEY: carrier} if carrier else None
    try:
        # Shared with the deliveries arriving at the same moment (group commit).
        model_insert(stored, extra=extra)
    except IntegrityError:
        if not (
            event.dedup_window_s is not None
            and _dedup_key_retire(provider=provider, dedup_key=key, window_s=event.dedup_window_s)
        ):
            # A redelivery: counted on the first delivery, answered 2xx, no second effect.
            first = _delivery_count(provider=provider, dedup_key=key)
            return WebhookEvent.objects.get(pk=first), False
        # The earlier event with this key is older than the window: this is a new one.
        try:
            model_insert(stored, extra=extra)
        except IntegrityError:  # a concurrent delivery of the same new event was first
            first = _delivery_count(provider=provider, dedup_key=key)
            return WebhookEvent.objects.get(pk=first), False
    if enqueue:
        webhook_event_enqueue(stored)
    return stored, True


def _dedup_key_retire(*, provider: str, dedup_key: str, window_s: int) -> bool:
    """Free the key of a stored event received more than window_s ago (its key gets its receipt
    time appended), so an identical later delivery is stored as a new event. False when the
    stored event is within the window (a redelivery). Of concurrent deliveries one retires the
    key; the others then find the new event within the window."""
    earlier = (
        WebhookEvent.objects.filter(provider=provider, dedup_key=dedup_key)
        .values_list("pk", "received_at")
        .first()
    )
    if earlier is None:
        return True  # removed meanwhile (expired, erased): the key is free
    pk, received_at = earlier
    if received_at >= timezone.now() - timedelta(seconds=window_s):
        return False
    retired = f"{dedup_key[:100]}@{int(received_at.timestamp() * 1000)}"
    WebhookEvent.objects.filter(pk=pk, dedup_key=dedup_key).update(dedup_key=retired)
    return True


_drain_requested_at = 0.0
DRAIN_THROTTLE_S = 0.2


def webhook_event_enqueue(event: WebhookEvent) -> None:
    """Have the event processed soon. The stored events are the queue: a drain task processes
    every accepted one, and a web process asks for a drain at most every 200 ms, so a burst of
    deliveries costs one database write each, not two. A minutely drain catches anything a
    throttled request left behind."""
    global _drain_requested_at
    now = time.monotonic()
    if Conf.SYNC or now - _drain_requested_at >= DRAIN_THROTTLE_S:
        _drain_requested_at = now
        async_task("ingestion.tasks.webhook_drain", task_name="webhook-drain", broker=broker())


def webhook_events_drain(*, limit: int = 1000) -> int:
    """Process accepted events (and claims left stale by a killed worker), oldest first."""
    processed = 0
    stale = timezone.now() - STALE_CLAIM
    while processed < limit:
        batch = list(
            WebhookEvent.objects.filter(status=Status.ACCEPTED)
            .order_by("received_at")
            .values_list("pk", flat=True)[:100]
        )
        batch += list(
            WebhookEvent.objects.filter(
                status=Status.PROCESSING, processed_at__lt=stale
            ).values_list("pk", flat=True)[:100]
        )
        if not batch:
            break
        for event_id in batch:
            webhook_event_process(event_id)
            processed += 1
    return processed


REJECTION_EXAMPLES = 5
# What one example keeps of the header names a sender chose (they are as untrusted as the body).
EXAMPLE_HEADERS, EXAMPLE_HEADER_LENGTH = 30, 64


def sender_address(request: HttpRequest) -> str:
    """The address a delivery came from, as counted: the client's address as the rate limits
    see it (behind ``SIBLING_PROXY_COUNT`` proxies too), an IPv6 address by its /64 (one host
    has a whole /64 to send from)."""
    raw = client_address(request)
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        return "unknown"
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def webhook_rejection_record(
    *, provider: str, reason: str, request: HttpRequest, body_length: int
) -> None:
    """Count a refused delivery: one atomic upsert into its (provider, reason, sender, hour)
    row, keeping the last few examples without bodies (the body is not trusted, and may be
    anything). Never raises: the refusal is answered whatever happens here."""
    now = datetime.now(UTC)
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)
    bucket = now.replace(minute=0, second=0, microsecond=0)
    example = {
        "at": now.isoformat(),
        "body_length": body_length,
        # Header names only, shortened: values may carry tokens, genuine or forged.
        "headers": sorted(
            name[5:].replace("_", "-").lower()[:EXAMPLE_HEADER_LENGTH]
            for name in request.META
            if name.startswith("HTTP_")
        )[:EXAMPLE_HEADERS],
    }
    key = {
        "provider": provider,
        "reason": reason[:100],
        "sender": sender_address(request),
        "bucket": bucket,
    }
    update = {
        "$inc": {"count": 1},
        "$set": {"last_at": now},
        "$setOnInsert": {
            "first_at": now,
            "expires_at": bucket
            + timedelta(days=settings.SIBLING_WEBHOOK_REJECTION_LOG_DAYS, hours=1),
        },
        "$push": {"examples": {"$each": [example], "$slice": -REJECTION_EXAMPLES}},
    }
    collection = mongo.plain_database()[WebhookRejection._meta.db_table]
    for _attempt in range(2):  # two first refusals of an hour may both try to insert the row
        try:
            collection.update_one(key, update, upsert=True)
            return
        except DuplicateKeyError:
            continue
        except PyMongoError:
            logger.warning("%s rejection could not be counted", provider, exc_info=True)
            return


def _delivery_count(*, provider: str, dedup_key: str) -> Any | None:
    """Count one more delivery on the stored event; its id, or None when it was removed
    between the two writes (an erasure) and there is nothing left to count."""
    stored = WebhookEvent.objects.filter(provider=provider, dedup_key=dedup_key)
    stored.update(deliveries=F("deliveries") + 1)
    return stored.values_list("pk", flat=True).first()


@method_decorator(csrf_exempt, name="dispatch")
class WebhookReceiver(View):
    """POST only. Subclasses set ``provider_id`` and implement ``verify`` and ``events``."""

    provider_id: ClassVar[str]
    http_method_names = ["post"]
    success_status: ClassVar[int] = 200

    def verify(self, request: HttpRequest, body: bytes) -> None:
        """Raise WebhookRejected unless the delivery is authentic (against the raw body)."""
        raise NotImplementedError

    def parse(self, request: HttpRequest, body: bytes) -> Any:
        """The delivery's payload, read after it was verified: the JSON body by default. A
        provider whose notifications carry everything in headers reads them here."""
        try:
            return json.loads(body)
        except (ValueError, RecursionError):  # nested past the decoder's limit: still malformed
            raise WebhookRejected("malformed JSON body", status=400) from None

    def intercept(self, request: HttpRequest, payload: Any) -> HttpResponse | None:
        """A response that bypasses storing (a verification handshake), or None."""
        return None

    def events(self, payload: Any, body: bytes) -> list[IncomingEvent]:
        raise NotImplementedError

    def post(self, request: HttpRequest) -> HttpResponse:
        try:
            return self._receive(request)
        except WebhookRejected as err:
            return JsonResponse({"error": str(err)}, status=err.status)
        except Exception:  # the sender retries a 5xx; a 500 page would tell it nothing
            logger.exception("%s webhook could not be stored", self.provider_id)
            return JsonResponse({"error": "temporarily unavailable"}, status=503)

    def _receive(self, request: HttpRequest) -> HttpResponse:
        declared = request.headers.get("Content-Length") or "0"
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise WebhookRejected("body over 1 MB", status=413)
        body = request.body
        if len(body) > MAX_BODY_BYTES:
            raise WebhookRejected("body over 1 MB", status=413)
        try:
            self.verify(request, body)
        except WebhookRejected as err:
            webhook_rejection_record(
                provider=self.provider_id, reason=str(err), request=request, body_length=len(body)
            )
            raise
        payload = self.parse(request, body)
        answer = self.intercept(request, payload)
        if answer is not None:
            return answer
        try:
            incoming = self.events(payload, body)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise WebhookRejected(f"unexpected payload ({type(err).__name__})", status=400) from err
        for event in incoming:
            webhook_event_store(provider=self.provider_id, event=event)
        return HttpResponse(status=self.success_status)


# Sources of events that are not providers; providers name their handler themselves
# (Provider.webhook_handler_path).
HANDLERS = {"events": "ingestion.events.event_handle"}


def webhook_handler(source: str) -> Any:
    from sources.providers import get_provider

    path = HANDLERS.get(source) or get_provider(source).webhook_handler_path
    return import_string(path)


def webhook_event_process(event_id: Any) -> WebhookEvent | None:
    """Run the source's handler for a stored event; failures are recorded, never raised."""
    now = timezone.now()
    event = WebhookEvent.objects.filter(pk=event_id).first()
    if event is None:
        return None
    # One processor per event (two drains may run at once): an atomic compare-and-set from the
    # state just read. Flat equality filters, each answered from the _id index.
    if event.status in (Status.ACCEPTED, Status.FAILED):
        current = Q(status=event.status)
    elif (
        event.status == Status.PROCESSING
        and event.processed_at is not None
        and event.processed_at < now - STALE_CLAIM
    ):
        current = Q(status=Status.PROCESSING, processed_at=event.processed_at)
    else:
        return event
    if not WebhookEvent.objects.filter(current, pk=event_id).update(
        status=Status.PROCESSING, processed_at=now
    ):
        return WebhookEvent.objects.filter(pk=event_id).first()
    event.status, event.processed_at = Status.PROCESSING, now
    with span_continued(
        _trace_carrier_of(event_id),
        "webhook.process",
        provider=event.provider,
        event_type=event.event_type,
        attempt=event.attempts + 1,
    ):
        return _event_process(event)


def _trace_carrier_of(event_id: Any) -> Any:
    """The trace context stored with the event; read only when tracing is on."""
    if not tracing_enabled():
        return None
    raw = mongo.plain_database()[WebhookEvent._meta.db_table].find_one(
        {"_id": event_id}, {TRACE_KEY: 1}
    )
    return (raw or {}).get(TRACE_KEY)


def _event_process(event: WebhookEvent) -> WebhookEvent:
    handler = webhook_handler(event.provider)
    event.attempts += 1
    try:
        handler(event)
        event.status = Status.PROCESSED
        event.error = event.error or ""
    except Exception as err:
        event.status = Status.FAILED
        # Staff read this in the event log: only our own errors' messages are written to be
        # safe; anything else (a parser's message may quote a value) is named by its class.
        safe = isinstance(err, SyncError | ProviderError)
        event.error = f"{type(err).__name__}: {str(err)[:200]}" if safe else type(err).__name__
        logger.warning("webhook %s failed: %s", event.pk, type(err).__name__)
    event.processed_at = timezone.now()
    # A processed event is kept for staff a while, then deleted by the TTL index; a failed one
    # stays until it is replayed.
    event.expires_at = (
        event.processed_at + timedelta(days=settings.SIBLING_WEBHOOK_RETENTION_DAYS)
        if event.status == Status.PROCESSED
        else None
    )
    # An update, not save(): an event deleted meanwhile (its person erased) stays deleted.
    WebhookEvent.objects.filter(pk=event.pk).update(
        status=event.status,
        error=event.error,
        attempts=event.attempts,
        processed_at=event.processed_at,
        expires_at=event.expires_at,
        user_id=event.user_id,
        connection_id=event.connection_id,
    )
    return event


@csrf_exempt
def noop(request: HttpRequest) -> HttpResponse:
    """The ceiling for `make bench-webhooks`: the same server, no work (development only)."""
    return HttpResponse(status=204)
