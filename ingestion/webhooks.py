"""Receiving pushed events: verify against the raw body, store, answer at once, process after.

Each provider's receiver (``sources/providers/<id>/webhooks.py``) subclasses
:class:`WebhookReceiver` and says how to verify a delivery and what events it carries; this
module does the rest once: the body limit, JSON parsing, the dedup key, storing, enqueueing, and
the answers (401 bad signature or token, 400 malformed JSON, 413 body over 1 MB, 405 wrong
method, 2xx for duplicates and for events that concern no one; never a 500).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar

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

from ingestion.models import WebhookEvent
from sibling.queue import broker
from sibling.writes import model_insert

logger = logging.getLogger(__name__)
MAX_BODY_BYTES = 1_000_000
STALE_CLAIM = timedelta(minutes=10)
Status = WebhookEvent.Status


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


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def webhook_event_store(
    *, provider: str, event: IncomingEvent, enqueue: bool = True
) -> tuple[WebhookEvent, bool]:
    """Store a verified event (encrypted) and have it processed; (event, False) for a
    redelivery, which only counts another delivery on the first one."""
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
    try:
        # Shared with the deliveries arriving at the same moment (group commit).
        model_insert(stored)
    except IntegrityError:
        # A redelivery: counted on the first delivery, answered 2xx, no second effect.
        return WebhookEvent.objects.get(pk=_delivery_count(provider=provider, dedup_key=key)), False
    if enqueue:
        webhook_event_enqueue(stored)
    return stored, True


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


def webhook_event_reject(*, provider: str, body: bytes, reason: str) -> None:
    """Record a refused delivery (without its body: it is not trusted) for the event log."""
    key = f"rejected:{body_digest(body)}"
    try:
        WebhookEvent.objects.create(
            provider=provider,
            dedup_key=key,
            received_at=timezone.now(),
            verified=False,
            status=Status.REJECTED,
            error=reason[:300],
        )
    except IntegrityError:
        _delivery_count(provider=provider, dedup_key=key)


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
            if err.status == 401:
                webhook_event_reject(provider=self.provider_id, body=body, reason=str(err))
            raise
        try:
            payload = json.loads(body)
        except ValueError:
            raise WebhookRejected("malformed JSON body", status=400) from None
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
    handler = webhook_handler(event.provider)
    event.attempts += 1
    try:
        handler(event)
        event.status = Status.PROCESSED
        event.error = event.error or ""
    except Exception as err:
        event.status = Status.FAILED
        event.error = f"{type(err).__name__}: {str(err)[:200]}"
        logger.warning("webhook %s failed: %s", event.pk, type(err).__name__)
    event.processed_at = timezone.now()
    event.save(update_fields=["status", "error", "attempts", "processed_at", "user", "connection"])
    return event


@csrf_exempt
def noop(request: HttpRequest) -> HttpResponse:
    """The ceiling for `make bench-webhooks`: the same server, no work (development only)."""
    return HttpResponse(status=204)
