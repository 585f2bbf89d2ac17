"""What every provider's sync client is: pages from a cursor, over a retried, counted session."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from django.utils import timezone

from ingestion.budgets import ProviderBudget, budget_for
from ingestion.http import CallCounter, ProviderHttp, RetryPolicy
from ingestion.tokens import OAuthTokens
from sources.models import UserDataSource
from sources.providers import Stream
from sources.providers.base import BACKFILL_EVERYTHING, EVERYTHING_SINCE

# How far before its last successful sync a connection whose cursor was lost relists.
GAP_OVERLAP = timedelta(days=1)


@dataclass
class Page:
    """One page as received. ``cursor`` is stored once the page is stored (None: unchanged)."""

    payload: Any
    cursor: Any = None
    progress: float | None = None  # 0..1 through a backfill, when the client can tell


@dataclass
class DayWindow:
    first: date
    last: date
    cursor: str | None  # the last complete day reached, to store after this window's page
    progress: float


def day_windows(
    *, cursor: str | None, start: date, last_day: date, complete_through: date, size_days: int
) -> Iterator[DayWindow]:
    """Windows of whole days, from the day after the cursor (or ``start``) through ``last_day``.

    The cursor only moves up to ``complete_through``: later days are still being recorded and
    are fetched again by the next sync, so a sync with nothing new costs one window.
    """
    first = date.fromisoformat(cursor) + timedelta(days=1) if cursor else start
    total = max(1, (last_day - first).days + 1)
    window_start = first
    while window_start <= last_day:
        window_end = min(window_start + timedelta(days=size_days - 1), last_day)
        done = min(window_end, complete_through)
        if done >= window_start:
            cursor = done.isoformat()
        yield DayWindow(
            window_start, window_end, cursor, min(1.0, ((window_end - first).days + 1) / total)
        )
        window_start = window_end + timedelta(days=1)


class SyncClient:
    """Yields a stream's pages from a stored cursor (None: first sync, backfill the window).

    Clients never store anything: the runner stores each page, then its cursor.
    """

    def __init__(
        self, connection: UserDataSource, *, counter: CallCounter, policy: RetryPolicy
    ) -> None:
        self.connection = connection
        self.provider = connection.provider_class
        self.counter = counter
        self.policy = policy
        # The provider's quotas, charged before every call this client makes (None: budgets
        # are off). A session a client builds itself passes it on as ``budget=``.
        self.budget: ProviderBudget | None = budget_for(
            self.provider, account=connection.external_account_id or str(connection.pk)
        )
        self.http = self.http_session()

    def http_session(self) -> ProviderHttp:
        return ProviderHttp(
            provider_name=self.provider.name,
            policy=self.policy,
            counter=self.counter,
            budget=self.budget,
        )

    def pages(self, stream: Stream, cursor: Any) -> Iterator[Page]:
        raise NotImplementedError

    def pages_between(self, stream: Stream, first: date, last: date) -> Iterator[Page]:
        """The pages of exactly these days (for a notification that names them); the pages
        carry no cursor. Providers whose notifications name days implement it."""
        raise NotImplementedError

    def backfill_start(self) -> datetime:
        """Where a first sync starts: the connection's history window back from now (the
        person's choice, else the default), or EVERYTHING_SINCE for all the provider keeps."""
        days = self.connection.backfill_days_in_force
        if days == BACKFILL_EVERYTHING:
            return EVERYTHING_SINCE
        return timezone.now() - timedelta(days=days)

    def gap_start(self) -> datetime:
        """Where a client relists from when the provider no longer knows its cursor (a change
        log kept for a limited time, a reconnect after weeks): from a day before the last
        successful sync, not the whole window again. The day covers a sync that ran long and
        items the provider dates a little before they become visible. The whole gap, as
        clients with date cursors fetch it: a window chosen for the first sync does not cut a
        hole in the history since. A connection that never succeeded starts at its window."""
        last = self.connection.last_success_at
        if last is None:
            return self.backfill_start()
        return last - GAP_OVERLAP

    def close(self) -> None:
        self.http.close()


class OAuthSyncClient(SyncClient):
    """A bearer-token client; tokens are refreshed before expiry and once on a 401."""

    def http_session(self) -> ProviderHttp:
        self.tokens = OAuthTokens(self.connection)
        return ProviderHttp(
            provider_name=self.provider.name,
            policy=self.policy,
            counter=self.counter,
            bearer=self.tokens.access_token,
            refresh=self.tokens.refresh,
            budget=self.budget,
        )
