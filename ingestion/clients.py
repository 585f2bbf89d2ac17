"""What every provider's sync client is: pages from a cursor, over a retried, counted session."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from ingestion.http import CallCounter, ProviderHttp, RetryPolicy
from ingestion.tokens import OAuthTokens
from sources.models import UserDataSource
from sources.providers import Stream


@dataclass
class Page:
    """One page as received. ``cursor`` is stored once the page is stored (None: unchanged)."""

    payload: Any
    cursor: Any = None
    progress: float | None = None  # 0..1 through a backfill, when the client can tell


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
        self.http = self.http_session()

    def http_session(self) -> ProviderHttp:
        return ProviderHttp(
            provider_name=self.provider.name, policy=self.policy, counter=self.counter
        )

    def pages(self, stream: Stream, cursor: Any) -> Iterator[Page]:
        raise NotImplementedError

    def backfill_start(self) -> datetime:
        return timezone.now() - timedelta(days=settings.SIBLING_BACKFILL_DAYS)

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
        )
