"""Strava activities, oldest first, within the application's rate limits.

``GET /athlete/activities`` with ``after`` (epoch seconds) answers in ascending start order;
pages are numbered under one ``after`` and the last is empty (a short page does not mean the
end: https://developers.strava.com/docs/, Pagination). The cursor is the latest start stored;
an incremental sync starts ``STRAVA_REFETCH_HOURS`` before it, since devices upload late.

Rate limits (https://developers.strava.com/docs/rate-limits/) are the application's, shared by
every athlete and so by every worker: two windows, 15 minutes (reset at :00, :15, :30, :45) and
the UTC day, for all requests and for reads, each answer saying the limits and the usage so far
(``X-RateLimit-Limit``/``-Usage`` and ``X-ReadRateLimit-Limit``/``-Usage``, "<15 min>,<day>").
The last usage seen is kept in the shared cache (one MongoDB collection every process reads);
a sync checks it before every call and defers the connection to the window's end once a window
is spent down to ``STRAVA_RATE_LIMIT_RESERVE``, rather than collecting 429s. A 429 defers the
same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from ingestion.clients import OAuthSyncClient, Page
from ingestion.errors import Deferred
from ingestion.http import ProviderHttp, response_check
from ingestion.processing import parse_datetime
from ingestion.tokens import OAuthTokens
from sources.providers.base import Stream
from sources.providers.strava.provider import Strava

QUARTER_S = 15 * 60
MAX_PAGE_SIZE = 200
# Header prefixes of the two buckets; names are matched case-insensitively (requests does).
BUCKETS = {"overall": "X-RateLimit", "read": "X-ReadRateLimit"}


# --- The application's rate-limit budget -------------------------------------------------------


def quarter_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(
        minute=now.astimezone(UTC).minute // 15 * 15, second=0, microsecond=0
    )


def next_quarter(now: datetime) -> datetime:
    return quarter_start(now) + timedelta(seconds=QUARTER_S)


def next_day(now: datetime) -> datetime:
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day + timedelta(days=1)


def budget_key() -> str:
    # Per application: the sandbox's client and a real one never share a budget.
    return f"strava:rate-limits:{Strava.client_credentials().get('client_id', '')}"


def _pair(value: str | None) -> tuple[int, int] | None:
    if not value:
        return None
    parts = value.split(",")
    if len(parts) != 2:
        return None
    try:
        return int(parts[0].strip()), int(parts[1].strip())
    except ValueError:
        return None


def usage_from(response: requests.Response) -> dict[str, list[int]]:
    """{bucket: [15-min limit, daily limit, 15-min usage, daily usage]} from an answer."""
    buckets = {}
    for bucket, prefix in BUCKETS.items():
        limit = _pair(response.headers.get(f"{prefix}-Limit"))
        usage = _pair(response.headers.get(f"{prefix}-Usage"))
        if limit and usage:
            buckets[bucket] = [*limit, *usage]
    return buckets


def budget_record(response: requests.Response, *, now: datetime | None = None) -> None:
    """Keep the usage an answer reports, for every worker to check before its next call.

    Answers from several workers arrive in any order: within one window the highest usage
    stands. A lost race costs one stale value, which the next answer corrects.
    """
    seen = usage_from(response)
    if not seen:
        return
    now = now or timezone.now()
    quarter = quarter_start(now).isoformat()
    day = now.astimezone(UTC).date().isoformat()
    state = cache.get(budget_key()) or {}
    same_quarter = state.get("quarter") == quarter
    same_day = state.get("day") == day
    merged = {}
    for bucket, (limit_15, limit_day, used_15, used_day) in seen.items():
        old = (state.get("buckets") or {}).get(bucket)
        if old and same_day:
            used_day = max(used_day, old[3])
            if same_quarter:
                used_15 = max(used_15, old[2])
        merged[bucket] = [limit_15, limit_day, used_15, used_day]
    timeout = int((next_day(now) - now).total_seconds()) + 60
    cache.set(budget_key(), {"quarter": quarter, "day": day, "buckets": merged}, timeout)


def _reserve(limit: int) -> int:
    # Never more than a tenth of a window: a small limit (a new application's) stays usable.
    return min(max(0, settings.STRAVA_RATE_LIMIT_RESERVE), limit // 10)


def budget_until(*, now: datetime | None = None, exceeded: bool = False) -> datetime | None:
    """When a spent window reopens, or None while calls remain in both windows.

    With ``exceeded`` (Strava answered 429) the answer is never None: the day when a daily
    count is at its limit, else the quarter.
    """
    now = now or timezone.now()
    state = cache.get(budget_key()) or {}
    quarter = quarter_start(now).isoformat()
    day = now.astimezone(UTC).date().isoformat()
    until = None
    for limit_15, limit_day, used_15, used_day in (state.get("buckets") or {}).values():
        if state.get("day") == day and used_day + _reserve(limit_day) >= limit_day:
            return next_day(now)  # the latest a window can reopen
        if state.get("quarter") == quarter and used_15 + _reserve(limit_15) >= limit_15:
            until = next_quarter(now)
    if until is None and exceeded:
        until = next_quarter(now)
    return until


def budget_check(*, now: datetime | None = None) -> None:
    """Raise Deferred while the application's budget is spent (before a call is made)."""
    until = budget_until(now=now)
    if until is not None:
        raise Deferred(_deferred_message(until, now), until=until)


def _deferred_message(until: datetime, now: datetime | None) -> str:
    window = "daily" if until == next_day(now or timezone.now()) else "15-minute"
    return f"Strava's {window} rate limit for Sibling is spent: waiting for the next window"


# --- The sync client ---------------------------------------------------------------------------


class StravaHttp(ProviderHttp):
    """Checks the shared budget before every call, keeps what each answer says of it."""

    def request_json(self, method: str, url: str, **kwargs: Any) -> Any:
        budget_check()
        return super().request_json(method, url, **kwargs)

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        budget_check()
        return super().request(method, url, **kwargs)


class StravaSyncClient(OAuthSyncClient):
    def http_session(self) -> ProviderHttp:
        # Tokens as every OAuth client has them (refreshed before expiry, rotated refresh
        # tokens saved before use), on a session that minds the shared budget.
        self.tokens = OAuthTokens(self.connection)
        return StravaHttp(
            provider_name=self.provider.name,
            policy=self.policy,
            counter=self.counter,
            check=self.check,
            bearer=self.tokens.access_token,
            refresh=self.tokens.refresh,
        )

    def check(self, response: requests.Response) -> None:
        budget_record(response)
        if response.status_code == 429:
            self.counter.rate_limited += 1
            until = budget_until(exceeded=True) or next_quarter(timezone.now())
            raise Deferred(_deferred_message(until, None), until=until)
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
