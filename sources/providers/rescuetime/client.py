"""RescueTime's Analytic Data API by hour, and its daily summary feed.

Errors come as HTTP 200 with an ``error`` body (https://www.rescuetime.com/rtx/developers), so
every body is inspected. Times are the person's local time without an offset, and the API does
not say which zone: they are read in the person's Sibling time zone (``Person.time_zone``, taken
from their browser), so each page is kept as ``{"time_zone": <IANA name>, "response": <the
answer>}`` and reprocessing it later gives the same instants. Days ("today", the dates asked
for) are the person's days too.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from functools import cached_property
from typing import Any
from zoneinfo import ZoneInfo

import requests
from django.utils import timezone

from ingestion.clients import Page, SyncClient, day_windows
from ingestion.errors import PermanentError, ReauthRequired
from ingestion.http import ProviderHttp, response_check
from sibling.people import person_zone
from sources.providers import Stream
from sources.providers.rescuetime.provider import RescueTime

WINDOW_DAYS = 7


class RescueTimeBodyCheckingHttp(ProviderHttp):
    def get_json(self, url: str, *, params: Any = None, operation: str = "") -> Any:
        body = super().get_json(url, params=params, operation=operation)
        if isinstance(body, dict) and "error" in body:
            if "key" in str(body.get("error")):
                raise ReauthRequired(RescueTime.reauth_message)
            raise PermanentError(f"RescueTime refused the query: {str(body['error'])[:80]}")
        return body


class RescueTimeSyncClient(SyncClient):
    def http_session(self) -> ProviderHttp:
        return RescueTimeBodyCheckingHttp(
            provider_name=RescueTime.name,
            policy=self.policy,
            counter=self.counter,
            check=lambda r: _check(r),
            budget=self.budget,
        )

    @property
    def key(self) -> str:
        return self.connection.credentials["api_key"]

    @cached_property
    def zone(self) -> ZoneInfo:
        """The zone RescueTime's local times are read in: the person's, once per sync."""
        return person_zone(self.connection.user_id)

    def page(self, body: Any) -> dict[str, Any]:
        return {"time_zone": self.zone.key, "response": body}

    def pages(self, stream: Stream, cursor: Any) -> Iterator[Page]:
        if stream.name == "hours":
            yield from self._hours(cursor)
        else:
            yield from self._days(cursor)

    def _hours(self, cursor: str | None) -> Iterator[Page]:
        # Today is still being recorded: the cursor stops at yesterday, so the next sync
        # fetches today again. The person's today: by the server's (UTC) date, a person west of
        # Greenwich would have their evening's day marked complete while it was still going on.
        today = timezone.now().astimezone(self.zone).date()
        for window in day_windows(
            cursor=cursor,
            start=self.backfill_start().date(),
            last_day=today,
            complete_through=today - timedelta(days=1),
            size_days=WINDOW_DAYS,
        ):
            body = self.http.get_json(
                f"{RescueTime.url('api')}/anapi/data",
                params={
                    "key": self.key,
                    "format": "json",
                    "perspective": "interval",
                    "resolution_time": "hour",
                    "restrict_kind": "activity",
                    "restrict_begin": window.first.isoformat(),
                    "restrict_end": window.last.isoformat(),
                },
                operation="anapi/data",
            )
            yield Page(payload=self.page(body), cursor=window.cursor, progress=window.progress)

    def _days(self, cursor: str | None) -> Iterator[Page]:
        body = self.http.get_json(
            f"{RescueTime.url('api')}/anapi/daily_summary_feed",
            params={"key": self.key},
            operation="anapi/daily_summary_feed",
        )
        dates = [entry.get("date") for entry in body if isinstance(entry, dict)]
        newest = max((d for d in dates if isinstance(d, str)), default=cursor)
        yield Page(payload=self.page(body), cursor=newest)


def _check(response: requests.Response) -> None:
    response_check(response, provider_name=RescueTime.name)
