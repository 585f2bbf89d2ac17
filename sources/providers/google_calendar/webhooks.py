"""Google Calendar push notifications: a POST with no body, everything in headers.

https://developers.google.com/workspace/calendar/api/guides/push: ``X-Goog-Channel-ID`` names
the channel Sibling opened (``tasks.channel_open``), ``X-Goog-Channel-Token`` carries the secret
token chosen for it (the only proof of authenticity Google offers: compared in constant time),
``X-Goog-Resource-State`` says ``sync`` (the handshake when the channel opens: acknowledged,
nothing to do) or ``exists`` (something changed in the watched calendar), and
``X-Goog-Message-Number`` rises with each message of a channel (a redelivery repeats it).

A notification is a hint: it asks for a sync of the connection, which reads the changes from the
API with its sync tokens. An unknown channel and a wrong token get the same refusal (401), so a
sender learns nothing about which channels exist; both are counted in the rejection log.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from django.http import HttpRequest, HttpResponse

from ingestion.models import WebhookEvent
from ingestion.notifications import connection_sync_request, event_concerns
from ingestion.webhooks import IncomingEvent, WebhookReceiver, WebhookRejected
from sources.models import UserDataSource
from sources.providers.google_calendar.provider import GoogleCalendar

logger = logging.getLogger(__name__)
Status = UserDataSource.Status
# Header values are the sender's: bounded before anything is looked up or stored.
MAX_HEADER = 256
STATES = frozenset({"sync", "exists", "not_exists"})
REFUSED = "unknown channel or wrong token"


def channel_connection_id(channel_id: str) -> ObjectId | None:
    """The connection a channel id names: ids are ``<connection id>-<random hex>``."""
    head, _, rest = channel_id.partition("-")
    if not rest:
        return None
    try:
        return ObjectId(head)
    except (InvalidId, TypeError):
        return None


def channel_of(channel_id: str) -> tuple[UserDataSource, dict[str, Any]] | None:
    """The live connection and the stored channel (with its token) a channel id names."""
    pk = channel_connection_id(channel_id)
    if pk is None:
        return None
    connection = UserDataSource.objects.filter(pk=pk).first()
    if (
        connection is None
        or connection.provider != GoogleCalendar.id
        or connection.status == Status.DISCONNECTED
    ):
        return None
    channel = ((connection.credentials or {}).get("channels") or {}).get(channel_id)
    if not isinstance(channel, dict) or not channel.get("token"):
        return None
    return connection, channel


def _header(request: HttpRequest, name: str) -> str:
    value = request.headers.get(name, "")
    return value if len(value) <= MAX_HEADER else ""


class CalendarWebhookReceiver(WebhookReceiver):
    provider_id = GoogleCalendar.id

    def verify(self, request: HttpRequest, body: bytes) -> None:
        channel_id = _header(request, "X-Goog-Channel-ID")
        token = _header(request, "X-Goog-Channel-Token")
        found = channel_of(channel_id) if channel_id and token else None
        # The comparison runs for an unknown channel too, against a token nobody holds.
        expected = found[1]["token"] if found else "-" * 43
        matches = hmac.compare_digest(token.encode(), str(expected).encode())
        if found is None or not matches:
            raise WebhookRejected(REFUSED)
        resource_id = _header(request, "X-Goog-Resource-ID")
        stored_resource = found[1].get("resource_id")
        if stored_resource and resource_id and resource_id != stored_resource:
            raise WebhookRejected(REFUSED)

    def parse(self, request: HttpRequest, body: bytes) -> Any:
        state = _header(request, "X-Goog-Resource-State")
        number = _header(request, "X-Goog-Message-Number")
        if state not in STATES:
            raise WebhookRejected("unexpected resource state", status=400)
        # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
        if not (number.isascii() and number.isdigit()):
            raise WebhookRejected("missing message number", status=400)
        return {
            "channel_id": _header(request, "X-Goog-Channel-ID"),
            "resource_state": state,
            "message_number": int(number),
        }

    def intercept(self, request: HttpRequest, payload: Any) -> HttpResponse | None:
        if payload["resource_state"] == "sync":
            # The channel's first message: it works. Nothing changed yet.
            return HttpResponse(status=200)
        return None

    def events(self, payload: Any, body: bytes) -> list[IncomingEvent]:
        return [
            IncomingEvent(
                # Message numbers are per channel; a redelivery repeats its number.
                dedup_key=f"{payload['channel_id']}:{payload['message_number']}",
                event_type=payload["resource_state"],
                payload=payload,
            )
        ]


def event_handle(event: WebhookEvent) -> None:
    payload = event.payload or {}
    found = channel_of(str(payload.get("channel_id", "")))
    if not event_concerns(event, found[0] if found else None):
        return
    connection, _channel = found
    # The notification says only that the calendar changed: the sync reads what changed from
    # the API, for every calendar (each costs one call when nothing changed).
    if not connection_sync_request(connection):
        event.error = "the connection is not syncing"
