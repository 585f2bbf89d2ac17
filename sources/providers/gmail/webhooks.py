"""Gmail push notifications: a Cloud Pub/Sub push with a Google-signed OIDC token.

https://developers.google.com/workspace/gmail/api/guides/push and
https://docs.cloud.google.com/pubsub/docs/authenticate-push-subscriptions
"""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
from django.conf import settings
from django.http import HttpRequest

from ingestion.http import CallCounter, RetryPolicy
from ingestion.models import WebhookEvent
from ingestion.notifications import (
    connection_for_account,
    connection_sync_request,
    event_concerns,
)
from ingestion.webhooks import IncomingEvent, WebhookReceiver, WebhookRejected, body_digest
from sibling import mongo
from sources.models import UserDataSource
from sources.providers.gmail.provider import Gmail

ISSUERS = ["https://accounts.google.com", "accounts.google.com"]


JWKS_CLIENT = "gmail_push_jwks"
# Seconds for fetching Google's signing keys: shorter than every other provider call
# (settings.SIBLING_PROVIDER_TIMEOUT_S), because the push delivery waits on it (Pub/Sub's
# acknowledgement deadline is 10 s by default); a push refused meanwhile is redelivered.
CERTS_FETCH_TIMEOUT_S = 5.0


def _jwks_client() -> jwt.PyJWKClient:
    # Cached per process; PyJWKClient refetches the set when a token names an unknown key.
    url = Gmail.url("push_certs")
    client = mongo.register_process_local(
        JWKS_CLIENT,
        lambda: jwt.PyJWKClient(url, cache_keys=True, lifespan=3600, timeout=CERTS_FETCH_TIMEOUT_S),
    )
    if client.uri != url:  # the setting changed (tests point it at a new sandbox)
        mongo.process_local_forget(JWKS_CLIENT)
        return _jwks_client()
    return client


def push_audience() -> str:
    return settings.GMAIL_PUSH_AUDIENCE or f"{settings.SIBLING_PUBLIC_URL}/webhooks/gmail/"


class GmailWebhookReceiver(WebhookReceiver):
    provider_id = "gmail"

    def verify(self, request: HttpRequest, body: bytes) -> None:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            raise WebhookRejected("missing bearer token")
        token = auth.removeprefix("Bearer ").strip()
        try:
            key = _jwks_client().get_signing_key_from_jwt(token).key
            claims = jwt.decode(
                token, key=key, algorithms=["RS256"], audience=push_audience(), issuer=ISSUERS
            )
        except (jwt.PyJWTError, jwt.PyJWKClientError):
            raise WebhookRejected("invalid push token") from None
        expected = settings.GMAIL_PUSH_SERVICE_ACCOUNT
        if not expected or claims.get("email") != expected or not claims.get("email_verified"):
            raise WebhookRejected("push token from an unexpected sender")

    def events(self, payload: Any, body: bytes) -> list[IncomingEvent]:
        message = payload["message"]
        data = message["data"]
        decoded = json.loads(base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)))
        # The docs show historyId as a string; real notifications have carried a number.
        history_id = int(str(decoded["historyId"]))
        message_id = str(message.get("messageId") or message.get("message_id") or body_digest(body))
        return [
            IncomingEvent(
                dedup_key=message_id,
                event_type="history",
                payload={"emailAddress": str(decoded["emailAddress"]), "historyId": history_id},
            )
        ]


def event_handle(event: WebhookEvent) -> None:
    payload = event.payload or {}
    connection = connection_for_account(
        provider=Gmail.id,
        external_lookup=UserDataSource.lookup_key(str(payload.get("emailAddress", ""))),
    )
    if not event_concerns(event, connection):
        return
    stored = (connection.cursors.get("messages") or {}).get("history_id")
    if stored and int(stored) >= int(payload.get("historyId", 0)):
        event.error = "already synced past this history id"
        return
    connection_sync_request(connection)


def watch_renew(connection: UserDataSource) -> dict[str, Any]:
    """users.watch for this mailbox (Google asks for a renewal at least every 7 days)."""
    client = Gmail.sync_client_class()(connection, counter=CallCounter(), policy=RetryPolicy())
    try:
        return client.http.post_json(
            f"{Gmail.url('api')}/users/me/watch",
            body={
                "topicName": settings.GMAIL_PUSH_TOPIC,
                "labelIds": ["INBOX"],
                # Spelled as Google's discovery document lists the enum (gmail v1,
                # WatchRequest.labelFilterBehavior: "include" or "exclude").
                "labelFilterBehavior": "include",
            },
            operation="watch",
        )
    finally:
        client.close()
