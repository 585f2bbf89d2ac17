"""Strava activities, oldest first, within the application's rate limits.

``GET /athlete/activities`` with ``after`` (epoch seconds) answers in ascending start order;
pages are numbered under one ``after`` and the last is empty (a short page does not mean the
end: https://developers.strava.com/docs/, Pagination). The cursor is the latest start stored;
an incremental sync starts ``STRAVA_REFETCH_HOURS`` before it, since devices upload late.

Rate limits (https://developers.strava.com/docs/rate-limits/) are the application's, shared by
every athlete and so by every worker: two windows, 15 minutes (reset at :00, :15, :30, :45) and
the UTC day, for all requests and for reads. They are the provider's declared budgets
(``Strava.budgets``), charged before every call in the shared buckets of ``ingestion.budgets``;
each answer's usage headers lower them to what Strava says remains (``Strava.budget_remaining``),
so a sync defers the connection to the window's end once a window is spent down to
``STRAVA_RATE_LIMIT_RESERVE``, rather than collecting 429s. A 429 defers the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from django.conf import settings
from django.utils import timezone

from ingestion.clients import OAuthSyncClient, Page
from ingestion.errors import Deferred
from ingestion.http import ProviderHttp, response_check
from ingestion.processing import parse_datetime
from ingestion.tokens import OAuthTokens
from sources.providers.base import Stream
from sources.providers.strava.provider import QUARTER_S, Strava, usage_from

MAX_PAGE_SIZE = 200


def quarter_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(
        minute=now.astimezone(UTC).minute // 15 * 15, second=0, microsecond=0
    )


def next_quarter(now: datetime) -> datetime:
    return quarter_start(now) + timedelta(seconds=QUARTER_S)


def next_day(now: datetime) -> datetime:
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day + timedelta(days=1)


def refused_until(response: requests.Response, now: datetime) -> datetime:
    """When a 429 ends: the next day when a daily count is at its limit, else the quarter."""
    for _limit_15, limit_day, _used_15, used_day in usage_from(response).values():
        if used_day >= limit_day:
            return next_day(now)
    return next_quarter(now)


class StravaSyncClient(OAuthSyncClient):
    def http_session(self) -> ProviderHttp:
        # Tokens as every OAuth client has them (refreshed before expiry, rotated refresh
        # tokens saved before use), on a session charging the application's budgets.
        self.tokens = OAuthTokens(self.connection)
        return ProviderHttp(
            provider_name=self.provider.name,
            policy=self.policy,
            counter=self.counter,
            check=self.check,
            bearer=self.tokens.access_token,
            refresh=self.tokens.refresh,
            budget=self.budget,
        )

    def check(self, response: requests.Response) -> None:
        if response.status_code == 429:
            # Strava says no Retry-After; its windows are clock-aligned.
            self.counter.rate_limited += 1
            until = refused_until(response, timezone.now())
            window = "daily" if until == next_day(timezone.now()) else "15-minute"
            raise Deferred(f"Strava's {window} rate limit for Sibling is spent", until=until)
        response_check(response, provider_name=self.provider.name)

    def pages(self, stream: Stream, cursor: Any) -> Iterator[Page]:
        start = self.backfill_start()
        if isinstance(cursor, int) and not isinstance(cursor, bool):
            after = cursor - settings.STRAVA_REFETCH_HOURS * 3600
            latest: int | None = cursor
        else:
            after, latest = int(start.timestamp()), None
        per_page = min(max(1, settings.STRAVA_PAGE_SIZE), MAX_PAGE_SIZE)
        span = max(1.0, timezone.now().timestamp() - start.timestamp())
        ordered = True
        previous: int | None = None
        page = 1
        while True:
            activities = self.http.get_json(
                f"{Strava.url('api')}/athlete/activities",
                params={"after": after, "page": page, "per_page": per_page},
                operation="getLoggedInAthleteActivities",
            )
            if not isinstance(activities, list):
                # Not a page of activities: quarantined whole by the processor, cursor kept.
                yield Page(payload=activities)
                return
            if not activities:
                if not ordered and latest is not None:
                    # Pages came out of order: the latest start is stored only now, at the end.
                    yield Page(payload=[], cursor=latest, progress=1.0)
                return
            starts = [s for s in (_start_epoch(a) for a in activities) if s is not None]
            behind = previous is not None and bool(starts) and starts[0] < previous
            if behind or starts != sorted(starts):
                ordered = False
            if starts:
                previous = starts[-1]
                latest = max(latest or starts[-1], *starts)
            yield Page(
                payload=activities,
                cursor=latest if ordered else None,
                progress=min(1.0, max(0.0, ((latest or after) - start.timestamp()) / span)),
            )
            page += 1


def _start_epoch(activity: Any) -> int | None:
    """An activity's start (epoch seconds) for the cursor; None when unreadable (the processor
    quarantines that item)."""
    try:
        return int(parse_datetime(activity["start_date"]).timestamp())
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
