"""Google Calendar events: every calendar in the person's list, each synced by its sync token.

https://developers.google.com/workspace/calendar/api/guides/sync: a calendar's first (full) sync
lists its events from the backfill window's start (``timeMin``) and follows ``nextPageToken``
to the last page, which carries ``nextSyncToken``; later syncs send that token (and none of the
parameters a sync token forbids: no ``timeMin``) and get only what changed, deletions included.
A token Google no longer honours answers 410 (``fullSyncRequired``): that calendar's records are
dropped and it is synced in full again, as the guide says. ``singleEvents=true`` returns the
instances of recurring events rather than their series; ``showDeleted=true`` returns cancelled
events, which delete their records.

The cursor keeps one entry per calendar, keyed by the calendar's digest (the id, often the
person's address, stays out of the plaintext cursor): ``{"sync_token"}`` between syncs, plus
``"page_token"`` (and the full sync's ``"time_min"``) while a listing is under way, so a killed
sync resumes at the page it had reached. A calendar that left the list has its records dropped,
as does one still listed whose events Google no longer serves (404): the others sync on.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from ingestion.clients import OAuthSyncClient, Page
from ingestion.errors import PermanentError
from ingestion.http import ProviderHttp
from ingestion.runner import sync_pages_stored_wait
from ingestion.schemas import kind_get
from ingestion.tokens import OAuthTokens
from sibling import mongo
from sources.providers import Stream
from sources.providers.google_calendar.processors import KIND, calendar_key
from sources.providers.google_calendar.provider import GoogleCalendar
from sources.providers.google_http import Gone, NotFound, google_check

# maxResults of events.list and of calendarList.list, each at the API's maximum: a sync's cost is
# its round trips (a backfill of a busy calendar is one page, not ten).
EVENTS_PAGE_SIZE = 2500
CALENDARS_PAGE_SIZE = 250


def calendar_url(calendar_id: str) -> str:
    return f"{GoogleCalendar.url('api')}/calendars/{quote(calendar_id, safe='')}"


def calendar_check(response: Any) -> None:
    google_check(response, provider_name=GoogleCalendar.name)


class CalendarSyncClient(OAuthSyncClient):
    events_page_size = EVENTS_PAGE_SIZE

    def http_session(self) -> ProviderHttp:
        self.tokens = OAuthTokens(self.connection)
        return ProviderHttp(
            provider_name=GoogleCalendar.name,
            policy=self.policy,
            counter=self.counter,
            bearer=self.tokens.access_token,
            refresh=self.tokens.refresh,
            check=calendar_check,
            budget=self.budget,
        )

    # Calendars --------------------------------------------------------------------------------

    def calendar_ids(self) -> list[str]:
        """Every calendar in the person's calendar list, in the list's order.

        Hidden entries included: hiding a calendar from Google Calendar's sidebar keeps it in
        the list (subscribed), and must not drop its records the way leaving it does.
        """
        ids: list[str] = []
        page_token: str | None = None
        while True:
            params: dict[str, Any] = {"maxResults": CALENDARS_PAGE_SIZE, "showHidden": "true"}
            if page_token:
                params["pageToken"] = page_token
            body = self.http.get_json(
                f"{GoogleCalendar.url('api')}/users/me/calendarList",
                params=params,
                operation="calendarList.list",
            )
            for entry in body.get("items") or []:
                if isinstance(entry, dict) and isinstance(entry.get("id"), str) and entry["id"]:
                    if not entry.get("deleted") and entry["id"] not in ids:
                        ids.append(entry["id"])
            page_token = body.get("nextPageToken") or None
            if not page_token:
                return ids

    # Events -----------------------------------------------------------------------------------

    def pages(self, stream: Stream, cursor: Any) -> Iterator[Page]:
        if stream.name != "events":
            raise PermanentError(f"{GoogleCalendar.name} has no stream {stream.name!r}")
        stored = cursor.get("calendars") if isinstance(cursor, dict) else None
        state: dict[str, dict[str, Any]] = {
            key: dict(entry)
            for key, entry in (stored or {}).items()
            if isinstance(entry, dict) and isinstance(key, str)
        }
        calendars = self.calendar_ids()
        listed = {calendar_key(calendar_id) for calendar_id in calendars}
        for index, calendar_id in enumerate(calendars):
            yield from self._calendar(state, calendar_id, index, len(calendars))
        for key in sorted(set(state) - listed):
            # The person left this calendar (or lost access): its events go with it.
            del state[key]
            yield self._forget_page(key, state)

    def _calendar(
        self, state: dict[str, dict[str, Any]], calendar_id: str, index: int, total: int
    ) -> Iterator[Page]:
        key = calendar_key(calendar_id)
        entry = state.get(key) or {}
        sync_token: str | None = entry.get("sync_token") or None
        page_token: str | None = entry.get("page_token") or None
        time_min: str | None = entry.get("time_min") or None
        if not sync_token and not time_min:
            time_min = self._time_min()
        url = f"{calendar_url(calendar_id)}/events"
        while True:
            # A page token belongs to its query: a resumed listing repeats the same parameters.
            params: dict[str, Any] = {
                "singleEvents": "true",
                "showDeleted": "true",
                "maxResults": self.events_page_size,
            }
            if sync_token:
                params["syncToken"] = sync_token
            else:
                params["timeMin"] = time_min
            if page_token:
                params["pageToken"] = page_token
            try:
                body = self.http.get_json(url, params=params, operation="events.list")
            except (NotFound, Gone) as err:
                if isinstance(err, NotFound) or not sync_token:
                    # Listed, yet its events are not served (deleted or unshared since the list
                    # was read): it goes as if it had left the list, and the others sync on.
                    state.pop(key, None)
                    yield self._forget_page(key, state)
                    return
                # The sync token is no longer valid: drop what this calendar stored, then
                # list it in full again (Google's sync guide).
                sync_token = page_token = None
                time_min = self._time_min()
                state[key] = {"time_min": time_min}
                yield self._forget_page(key, state)
                continue
            if not isinstance(body, dict):
                raise PermanentError(
                    f"{GoogleCalendar.name} sent an events page that is not an object"
                )
            page_token = body.get("nextPageToken") or None
            if page_token:
                base = {"sync_token": sync_token} if sync_token else {"time_min": time_min}
                state[key] = {**base, "page_token": page_token}
            else:
                next_sync_token = body.get("nextSyncToken")
                if not isinstance(next_sync_token, str) or not next_sync_token:
                    raise PermanentError(
                        f"{GoogleCalendar.name} ended a listing without a sync token"
                    )
                state[key] = {"sync_token": next_sync_token}
            items = body.get("items")
            yield Page(
                payload={
                    "calendar_id": calendar_id,
                    "items": items if isinstance(items, list) else [],
                },
                cursor={"calendars": _copy(state)},
                progress=(index + (0.5 if page_token else 1.0)) / total,
            )
            if not page_token:
                return

    def _time_min(self) -> str:
        return self.backfill_start().isoformat(timespec="seconds")

    def _forget_page(self, key: str, state: dict[str, dict[str, Any]]) -> Page:
        """A page that drops every record stored for one calendar, with the cursor as it is."""
        return Page(
            payload={"calendar_id": None, "items": [], "forget": self._stored_keys(key)},
            cursor={"calendars": _copy(state)},
        )

    def _stored_keys(self, key: str) -> list[str]:
        """The external ids this connection stored for one calendar (read from the records'
        plaintext envelope: the calendar's digest prefixes them). Pages this sync handed over
        are stored first: fetched ahead, the last of them may still be on their way."""
        sync_pages_stored_wait()
        prefix = f"{key}:"
        collection = mongo.plain_database()[kind_get(KIND).collection]
        found = collection.find(
            {
                "user": self.connection.user_id,
                "provider": GoogleCalendar.id,
                "kind": KIND,
                # ";" follows ":" in code point order: every id with the prefix, by the index.
                "external_id": {"$gte": prefix, "$lt": f"{key};"},
            },
            {"external_id": 1, "connection": 1},
        )
        return sorted(
            doc["external_id"]
            for doc in found
            if str(doc.get("external_id", "")).startswith(prefix)
            and doc.get("connection") in (None, self.connection.pk)
        )


def _copy(state: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {key: dict(entry) for key, entry in state.items()}
