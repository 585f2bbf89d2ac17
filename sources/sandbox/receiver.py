"""A subscriber of Sibling's change notifications, for development and tests.

``POST /sandbox/_receiver/<endpoint>/`` behaves as a careful receiver does: it verifies each
delivery's Standard Webhooks signature with the endpoint's secret (the ``standardwebhooks``
library: ``webhook-id``, ``webhook-timestamp`` within 5 minutes, ``webhook-signature``), answers
401 to anything that does not verify, and 200 to a verified delivery, once per ``webhook-id``
(a redelivery is answered 200 and marked duplicate). Every POST is recorded
(``ReceivedNotification``), verified or not. An endpoint switched down answers 503 (to show a
redelivery). Unknown endpoints answer 404.

Endpoints are kept in the sandbox store (provider ``receiver``, kind ``endpoint``): their secret
and whether they are down. ``POST /sandbox/_receiver {"endpoint": name, "down": true|false}``
switches one down (answering 503, or ``"status"``) or up; ``GET /sandbox/_receiver/<endpoint>/``
lists what it received.
``make run`` registers a subscriber ("Sandbox receiver") pointing at the endpoint ``dev``
(:func:`dev_subscriber_ensure`).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from standardwebhooks import Webhook

from . import store
from .common import json_body, json_response
from .models import ReceivedNotification

STORE = "receiver"
ENDPOINT = "endpoint"
DEV_ENDPOINT = "dev"
DEV_SUBSCRIBER = "Sandbox receiver"
MAX_BODY = 256 * 1024


def receiver_url(endpoint: str, base_url: str | None = None) -> str:
    return f"{(base_url or settings.SIBLING_SANDBOX_BASE_URL).rstrip('/')}/_receiver/{endpoint}/"


def receiver_endpoint_set(
    endpoint: str, *, secret: str | None = None, down: bool | None = None, status: int = 503
) -> None:
    """Create or change an endpoint: its secret, and whether it is down (answering ``status``,
    503 by default; 410 says "send nothing more")."""
    record = store.record_get(STORE, ENDPOINT, endpoint)
    if record is None:
        store.record_put(
            STORE,
            ENDPOINT,
            endpoint,
            data={"secret": secret or "", "down": bool(down), "status": status},
        )
        return
    changes: dict[str, Any] = {}
    if secret is not None:
        changes["secret"] = secret
    if down is not None:
        changes["down"] = bool(down)
        changes["status"] = status
    store.record_set(record, **changes)


def received(endpoint: str) -> list[ReceivedNotification]:
    """What the endpoint received, oldest first."""
    return list(
        ReceivedNotification.objects.filter(endpoint=endpoint).order_by("received_at", "pk")
    )


def _record(endpoint: str, answered: int, **fields: Any) -> None:
    ReceivedNotification.objects.create(
        endpoint=endpoint[:100], answered=answered, received_at=timezone.now(), **fields
    )


@csrf_exempt
def receive(request: HttpRequest, endpoint: str) -> HttpResponse:
    config = store.record_get(STORE, ENDPOINT, endpoint)
    if config is None:
        return json_response({"error": "no such endpoint"}, status=404)
    if request.method == "GET":
        return json_response(
            [
                {
                    "webhook_id": row.webhook_id,
                    "type": row.event_type,
                    "verified": row.verified,
                    "duplicate": row.duplicate,
                    "answered": row.answered,
                    "error": row.error,
                    "received_at": row.received_at.isoformat(),
                }
                for row in received(endpoint)
            ]
        )
    if request.method != "POST":
        return json_response({"error": "method not allowed"}, status=405)
    webhook_id = request.headers.get("webhook-id", "")[:200]
    if config.data.get("down"):
        status = int(config.data.get("status") or 503)
        _record(endpoint, status, webhook_id=webhook_id, error="endpoint down")
        return json_response({"error": "down"}, status=status)
    body = request.body
    if len(body) > MAX_BODY:
        _record(endpoint, 413, webhook_id=webhook_id, error="body too large")
        return json_response({"error": "too large"}, status=413)
    headers = {name: value for name, value in request.headers.items()}
    try:
        payload = Webhook(config.data.get("secret") or "").verify(body, headers)
    except Exception as err:  # any malformed header or signature is a refusal, never a 500
        _record(endpoint, 401, webhook_id=webhook_id, error=f"refused: {type(err).__name__}")
        return json_response({"error": "signature not verified"}, status=401)
    event_type = payload.get("type", "") if isinstance(payload, dict) else ""
    # By the index's fields only (a third field would scan on the embedded server).
    duplicate = any(
        ReceivedNotification.objects.filter(endpoint=endpoint, webhook_id=webhook_id).values_list(
            "verified", flat=True
        )
    )
    _record(
        endpoint,
        200,
        webhook_id=webhook_id,
        event_type=str(event_type)[:60],
        verified=True,
        duplicate=duplicate,
        body=payload if isinstance(payload, dict) else None,
    )
    return json_response({"received": webhook_id, "duplicate": duplicate})


@csrf_exempt
def control(request: HttpRequest) -> HttpResponse:
    """``POST {"endpoint": name, "down": bool, "status": 503}``: switch an endpoint down (it
    answers ``status``) or up."""
    if request.method != "POST":
        return json_response({"error": "method not allowed"}, status=405)
    data = json_body(request)
    if data is None or not isinstance(data.get("endpoint"), str) or "down" not in data:
        return json_response({"error": 'expected {"endpoint": name, "down": bool}'}, status=400)
    if store.record_get(STORE, ENDPOINT, data["endpoint"]) is None:
        return json_response({"error": "no such endpoint"}, status=404)
    status = data.get("status", 503)
    if not isinstance(status, int) or not 400 <= status <= 599:
        return json_response({"error": "status must be an HTTP error status"}, status=400)
    receiver_endpoint_set(data["endpoint"], down=bool(data["down"]), status=status)
    return json_response({"endpoint": data["endpoint"], "down": bool(data["down"])})


def dev_subscriber_ensure(base_url: str | None = None) -> str:
    """The development subscriber pointing at the receiver's ``dev`` endpoint, with every event
    type and category, and the endpoint holding its secret. Idempotent; made only where the
    sandbox is allowed. Says what it did."""
    if not settings.SIBLING_SANDBOX_ALLOWED:
        return "the sandbox is off: no development subscriber"
    from outbound.models import EVENT_TYPES, Subscriber
    from outbound.signing import secret_generate

    url = receiver_url(DEV_ENDPOINT, base_url)
    subscriber = Subscriber.objects.filter(name=DEV_SUBSCRIBER).first()
    if subscriber is None:
        subscriber = Subscriber(
            name=DEV_SUBSCRIBER,
            url=url,
            secret=secret_generate(),
            event_types=list(EVENT_TYPES),
            categories=["external", "behavioral", "volunteered"],
        )
        subscriber.save()
        subscriber = Subscriber.objects.get(pk=subscriber.pk)  # the secret as stored, decrypted
    elif subscriber.url != url:
        Subscriber.objects.filter(pk=subscriber.pk).update(url=url)
    receiver_endpoint_set(DEV_ENDPOINT, secret=subscriber.secret)
    return f"change notifications go to {url} (admin: Subscribers, {DEV_SUBSCRIBER!r})"
