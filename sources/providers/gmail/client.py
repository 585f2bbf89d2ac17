"""Gmail message metadata: a full sync of the backfill window, then history.list increments.

https://developers.google.com/workspace/gmail/api/guides/sync: a full sync lists the window with
messages.list and reads each message; the historyId read from the profile *before* listing is
where the incremental sync starts, so nothing that changes during the backfill is missed (it is
replayed, and records are upserted by id). A history id Gmail no longer keeps answers 404: the
window is synced in full again.

Only metadata is read (format=metadata with four headers), never a body. Messages are read
through Gmail's batch endpoint (sources.providers.google_batch), ``GMAIL_BATCH_SIZE`` (50) per
request: one round trip instead of 50, the same quota (a batch of n costs n messages.get).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import requests
from django.conf import settings

from ingestion.clients import OAuthSyncClient, Page
from ingestion.errors import PermanentError
from ingestion.http import ProviderHttp
from ingestion.tokens import OAuthTokens
from sources.providers import Stream
from sources.providers.gmail.provider import Gmail
from sources.providers.google_batch import MAX_BATCH_CALLS, BatchCall, batch_call
from sources.providers.google_http import NotFound, google_check

METADATA_HEADERS = ("From", "To", "Subject", "Date")
HISTORY_TYPES = ("messageAdded", "messageDeleted")


def gmail_check(response: requests.Response) -> None:
    """Google's error envelope mapped to what the runner does (sources.providers.google_http):
    a quota 403 is a rate limit like a 429, any other 403 is a refusal."""
    google_check(response, provider_name=Gmail.name)


class GmailHttp(ProviderHttp):
    def get_json_or_none(self, url: str, *, params: Any = None, operation: str = "") -> Any | None:
        """The body, or None when the resource is not (or no longer) there."""
        try:
            return self.get_json(url, params=params, operation=operation)
        except NotFound:
            return None


class GmailSyncClient(OAuthSyncClient):
    # Each message costs one messages.get (20 quota units under the 2026 quota, 6,000 units per
    # user and minute): a page of 100 fits in a minute's quota, so a rate limit never lands in
    # the middle of a page that would then be fetched again from its start. (messages.list and
    # history.list allow 500, but 500 messages.get are 10,000 units: more than a minute's.)
    page_size = 100
    http: GmailHttp

    def http_session(self) -> ProviderHttp:
        self.tokens = OAuthTokens(self.connection)
        return GmailHttp(
            provider_name=Gmail.name,
            policy=self.policy,
            counter=self.counter,
            bearer=self.tokens.access_token,
            refresh=self.tokens.refresh,
            check=gmail_check,
            budget=self.budget,
        )

    @property
    def api(self) -> str:
        return f"{Gmail.url('api')}/users/me"

    def pages(self, stream: Stream, cursor: Any) -> Iterator[Page]:
        if stream.name != "messages":
            raise PermanentError(f"Gmail has no stream {stream.name!r}")
        cursor = cursor if isinstance(cursor, dict) else {}
        history_id = cursor.get("history_id")
        if history_id and cursor.get("page_token"):
            yield from self._full_sync(
                history_id=str(history_id),
                page_token=str(cursor["page_token"]),
                after_s=cursor.get("after"),
            )
        elif history_id:
            yield from self._incremental(str(history_id))
        else:
            yield from self._full_sync()

    # Full sync --------------------------------------------------------------------------------

    def _full_sync(
        self,
        *,
        history_id: str | None = None,
        page_token: str | None = None,
        after_s: int | None = None,
    ) -> Iterator[Page]:
        if history_id is None:
            profile = self.http.get_json(f"{self.api}/profile", operation="getProfile")
            history_id = str(profile["historyId"])
        # A page token belongs to its query: a resumed sync lists with the window it began with.
        if not isinstance(after_s, int):
            after_s = int(self.backfill_start().timestamp())
        started_ms = time.time() * 1000
        while True:
            params: dict[str, Any] = {"q": f"after:{after_s}", "maxResults": self.page_size}
            if page_token:
                params["pageToken"] = page_token
            body = self.http.get_json(
                f"{self.api}/messages", params=params, operation="messages.list"
            )
            messages = self._messages_get(
                ref.get("id") for ref in body.get("messages") or [] if isinstance(ref, dict)
            )
            page_token = body.get("nextPageToken") or None
            if page_token:
                cursor = {"history_id": history_id, "page_token": page_token, "after": after_s}
                # Listing everything (after:0) has no span to measure progress against.
                progress = _progress(messages, after_s * 1000, started_ms) if after_s > 0 else None
            else:
                cursor, progress = {"history_id": history_id}, 1.0
            yield Page(payload={"messages": messages}, cursor=cursor, progress=progress)
            if not page_token:
                return

    # Incremental ------------------------------------------------------------------------------

    def _incremental(self, start_history_id: str) -> Iterator[Page]:
        page_token: str | None = None
        while True:
            params: dict[str, Any] = {
                "startHistoryId": start_history_id,
                "historyTypes": list(HISTORY_TYPES),
                "maxResults": self.page_size,
            }
            if page_token:
                params["pageToken"] = page_token
            body = self.http.get_json_or_none(
                f"{self.api}/history", params=params, operation="history.list"
            )
            if body is None:
                # startHistoryId is older than the history Gmail keeps (a mailbox paused or
                # disconnected for weeks, then reconnected). Pages of this history already
                # stored stay; the mailbox is listed again from just before the last successful
                # sync (the gap), not over the whole history window.
                yield from self._full_sync(after_s=int(self.gap_start().timestamp()))
                return
            added, deleted = _history_changes(body.get("history") or [])
            page_token = body.get("nextPageToken") or None
            # Gmail always sends historyId; without one, staying put replays and loses nothing.
            newest = body.get("historyId") or start_history_id
            cursor = None if page_token else {"history_id": str(newest)}
            yield Page(
                payload={"messages": self._messages_get(added), "deleted": deleted},
                cursor=cursor,
            )
            if not page_token:
                return

    # Messages ---------------------------------------------------------------------------------

    def _messages_get(self, ids: Any) -> list[dict[str, Any]]:
        """Metadata of each message as received, in the order listed, through batch requests;
        one deleted since it was listed (its part answers 404) is skipped."""
        wanted = list(dict.fromkeys(m for m in ids if isinstance(m, str) and m))
        size = min(max(1, int(getattr(settings, "GMAIL_BATCH_SIZE", 50))), MAX_BATCH_CALLS)
        params = {"format": "metadata", "metadataHeaders": list(METADATA_HEADERS)}
        messages = []
        for start in range(0, len(wanted), size):
            chunk = wanted[start : start + size]
            # Keys are positions, never the ids: an id is the provider's text, kept out of the
            # part headers; in the path it is quoted whole.
            calls = [
                BatchCall(
                    key=str(n), url=f"{self.api}/messages/{quote(mid, safe='')}", params=params
                )
                for n, mid in enumerate(chunk)
            ]
            bodies = batch_call(self.http, Gmail.url("batch"), calls, operation="messages.get")
            messages.extend(
                body for n in range(len(chunk)) if isinstance(body := bodies.get(str(n)), dict)
            )
        return messages


def _history_changes(records: list[Any]) -> tuple[list[str], list[str]]:
    """Ids added (in order, without those deleted later in the same history) and ids deleted."""
    added: dict[str, None] = {}
    deleted: dict[str, None] = {}
    for record in records:
        if not isinstance(record, dict):
            continue
        for entry in record.get("messagesAdded") or []:
            message_id = _entry_id(entry)
            if message_id:
                added[message_id] = None
        for entry in record.get("messagesDeleted") or []:
            message_id = _entry_id(entry)
            if message_id:
                added.pop(message_id, None)
                deleted[message_id] = None
    return list(added), list(deleted)


def _entry_id(entry: Any) -> str | None:
    message = entry.get("message") if isinstance(entry, dict) else None
    message_id = message.get("id") if isinstance(message, dict) else None
    return message_id if isinstance(message_id, str) and message_id else None


def _progress(messages: list[dict[str, Any]], after_ms: float, started_ms: float) -> float | None:
    """How far back through the window the (newest-first) listing has come, by time: unlike
    resultSizeEstimate, it needs nothing from before a resume and is not rough by design."""
    dates = []
    for message in messages:
        try:
            dates.append(int(message.get("internalDate")))
        except (TypeError, ValueError):
            continue
    if not dates or started_ms <= after_ms:
        return None
    return max(0.0, min(1.0, (started_ms - min(dates)) / (started_ms - after_ms)))
