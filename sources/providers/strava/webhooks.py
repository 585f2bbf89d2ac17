"""Strava push subscriptions: the validation request, then events as hints.

https://developers.strava.com/docs/webhooks/: creating the application's one subscription makes
Strava send ``GET <callback>?hub.mode=subscribe&hub.challenge=...&hub.verify_token=...``,
answered within two seconds with ``{"hub.challenge": ...}``. Events are POSTed as
``{object_type, object_id, aspect_type, owner_id, subscription_id, event_time, updates}``.

Strava signs nothing. An event is taken only when it names the configured subscription, and
only as a hint: a created or changed activity starts a sync, which reads the activity from the
API with the athlete's own token; a deletion removes a record Sibling already holds (nothing is
read from the event but ids); a deauthorization, once Strava refuses the grant, disconnects and
deletes what Sibling collected from Strava (Strava's API agreement).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from typing import Any

from django.conf import settings
from django.db.models import F
from django.http import HttpRequest, HttpResponse, JsonResponse

from ingestion.errors import ReauthRequired
from ingestion.models import WebhookEvent
from ingestion.notifications import (
    EventHandler,
    connection_for_account,
    connection_notice,
    connection_sync_request,
    event_dispatch,
)
from ingestion.schemas import ProcessedPage
from ingestion.storage import page_store
from ingestion.tokens import OAuthTokens
from ingestion.webhooks import (
    IncomingEvent,
    WebhookReceiver,
    WebhookRejected,
    webhook_rejection_record,
)
from sources.models import UserDataSource
from sources.providers.strava.provider import Strava
from sources.services import connection_data_delete, connection_disconnect

logger = logging.getLogger(__name__)
# A challenge is Strava's random string; anything longer is not echoed.
MAX_CHALLENGE = 255


def _same(given: str, expected: str) -> bool:
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def _id(value: Any) -> int:
    """A Strava id (int64): an integer, or its digits; anything else is malformed."""
    if isinstance(value, bool):
        raise ValueError("not an id")
    if isinstance(value, str) and value.isdigit() and len(value) <= 19:
        value = int(value)
    # An int64, as Strava's ids are (and as BSON can store).
    if isinstance(value, int) and 0 < value < 2**63:
        return value
    raise ValueError("not an id")


def _flag(value: Any) -> str | None:
    """Strava's booleans in ``updates`` are the strings "true" and "false"."""
    return value.lower() if isinstance(value, str) and len(value) <= 5 else None


def _epoch(value: Any) -> int | None:
    """An event time (epoch seconds), or None for anything else."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63:
        return value
    return None


class StravaWebhookReceiver(WebhookReceiver):
    provider_id = "strava"
    http_method_names = ["get", "post"]

    def get(self, request: HttpRequest) -> HttpResponse:
        """The subscription's validation: echo the challenge when the verify token matches."""
        mode = request.GET.get("hub.mode", "")
        challenge = request.GET.get("hub.challenge", "")
        token = request.GET.get("hub.verify_token", "")
        if (
            mode == "subscribe"
            and 0 < len(challenge) <= MAX_CHALLENGE
            and _same(token, settings.STRAVA_WEBHOOK_VERIFY_TOKEN)
        ):
            return JsonResponse({"hub.challenge": challenge})
        webhook_rejection_record(
            provider=self.provider_id,
            reason="subscription validation refused",
            request=request,
            body_length=0,
        )
        return JsonResponse({"error": "subscription validation refused"}, status=403)

    def verify(self, request: HttpRequest, body: bytes) -> None:
        # Nothing is signed: the subscription id is all an event can be checked by. The body
        # is read here once, and kept for parse (a view instance serves one request).
        self.payload = payload = super().parse(request, body)
        given = payload.get("subscription_id") if isinstance(payload, dict) else None
        if isinstance(given, bool) or not isinstance(given, int | str):
            raise WebhookRejected("missing or unknown subscription")
        if not _same(str(given), str(settings.STRAVA_WEBHOOK_SUBSCRIPTION_ID or "")):
            raise WebhookRejected("missing or unknown subscription")

    def parse(self, request: HttpRequest, body: bytes) -> Any:
        return self.payload

    def events(self, payload: Any, body: bytes) -> list[IncomingEvent]:
        object_type, aspect_type = payload["object_type"], payload["aspect_type"]
        # A type Strava adds later is stored and answered 200 (its handler says unhandled);
        # only a shape no event has is refused.
        if not all(
            isinstance(t, str) and t.isidentifier() and len(t) <= 40
            for t in (object_type, aspect_type)
        ):
            raise ValueError("malformed object or aspect type")
        updates = payload.get("updates") or {}
        if not isinstance(updates, dict):
            raise ValueError("updates is not an object")
        # Only what the handlers read is kept: ids, the type, and the deauthorization flag.
        event = {
            "object_type": object_type,
            "aspect_type": aspect_type,
            "object_id": _id(payload["object_id"]),
            "owner_id": _id(payload["owner_id"]),
            "event_time": _epoch(payload.get("event_time")),
            "authorized": _flag(updates.get("authorized")) if object_type == "athlete" else None,
        }
        # Strava retries a delivery with the same body: the same event, one effect.
        canonical = json.dumps(
            [payload.get("subscription_id"), event, updates], sort_keys=True, default=str
        )
        return [
            IncomingEvent(
                dedup_key=hashlib.sha256(canonical.encode()).hexdigest(),
                event_type=f"{object_type}.{aspect_type}",
                payload=event,
            )
        ]


def _activity_changed(event: WebhookEvent, connection: UserDataSource) -> None:
    # A hint: the sync reads the athlete's activities from the API with their own token.
    if not connection_sync_request(connection):
        event.error = "no sync started: the connection is not active or a sync is queued"


def _activity_deleted(event: WebhookEvent, connection: UserDataSource) -> None:
    counts = page_store(
        connection=connection,
        stream="activities",
        processed=ProcessedPage(removed=[("workout", str(event.payload["object_id"]))]),
    )
    if counts.deleted:
        UserDataSource.objects.filter(pk=connection.pk).update(
            records_stored=F("records_stored") - counts.deleted
        )


def _athlete_updated(event: WebhookEvent, connection: UserDataSource) -> None:
    if event.payload.get("authorized") != "false":
        return  # a profile change: nothing Sibling keeps
    # Strava signs nothing, and what follows deletes data: the event is believed only once
    # Strava itself refuses the grant. A refresh asks it (serialised with the syncs' refreshes,
    # the rotated token saved before anything else); a network error or 5xx raises, and the
    # event fails for staff to replay, with nothing deleted.
    try:
        OAuthTokens(connection).refresh()
    except ReauthRequired:
        pass  # refused: the grant is gone
    else:
        event.error = "not a deauthorization: Strava still honours the grant"
        return
    # Every token is dead already, so there is nothing to revoke (and no pending revocation to
    # keep).
    uid = (connection.credentials or {}).get("uid")
    connection.credentials = {"uid": uid} if uid else None
    connection_disconnect(connection=connection, delete_data=False, keep_pending=False)
    # Strava's API agreement: on revocation the athlete's Strava data is deleted (nothing here
    # obliges Sibling to keep it). The connection itself stays, disconnected, to tell the
    # person why; reconnecting starts over with a backfill.
    connection_data_delete(connection=connection)
    UserDataSource.objects.filter(pk=connection.pk).update(records_stored=0)
    connection_notice(
        connection,
        "You removed Sibling's access in your Strava settings, so it stopped syncing and, as "
        "Strava requires, deleted the activities it had collected from Strava.",
    )
    logger.info(
        "connection %s disconnected and its data deleted: the athlete deauthorized Sibling",
        connection.pk,
    )


HANDLERS: dict[str, EventHandler] = {
    "activity.create": _activity_changed,
    "activity.update": _activity_changed,
    "activity.delete": _activity_deleted,
    "athlete.update": _athlete_updated,
}


def event_handle(event: WebhookEvent) -> None:
    payload = event.payload or {}
    connection = connection_for_account(
        provider=Strava.id, external_account_id=str(payload.get("owner_id", ""))
    )
    event_dispatch(event, connection, HANDLERS)
