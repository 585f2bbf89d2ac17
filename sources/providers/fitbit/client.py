"""Google Health API data points by civil-day windows, every page of a window merged into one.

Windows are whole civil days in the person's own time (filters on civil time,
https://developers.google.com/health/reference/rest), so a day's points never straddle two
windows and a processor can total a day from one page. The last two days are fetched again on
each sync: a tracker uploads late, and a civil day ends up to 14 hours after UTC's.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

from ingestion.clients import OAuthSyncClient, Page, day_windows
from ingestion.http import ProviderHttp
from sources.providers import Stream
from sources.providers.fitbit.provider import Fitbit
from sources.providers.google_http import google_check

# Civil-time filter fields by data type (path kebab-case, filter prefix snake_case).
FILTERS = {
    "steps": "steps.interval.civil_start_time",
    "heart-rate": "heart_rate.sample_time.civil_time",
    # Sleep filters on its end time only; a night belongs to the day it ends.
    "sleep": "sleep.interval.civil_end_time",
}
WINDOW_DAYS = {"steps": 14, "heart-rate": 7, "sleep": 30}
PAGE_SIZE = {"steps": 10000, "heart-rate": 10000, "sleep": 25}
REFETCH_DAYS = 2


class FitbitSyncClient(OAuthSyncClient):
    def http_session(self) -> ProviderHttp:
        http = super().http_session()
        http.check = lambda r: google_check(r, provider_name=Fitbit.name)
        return http

    def pages(self, stream: Stream, cursor: Any) -> Iterator[Page]:
        for window in day_windows(
            cursor=cursor,
            start=self.backfill_start().date(),
            last_day=date.today() + timedelta(days=1),  # civil "today" is at most a day ahead
            complete_through=date.today() - timedelta(days=REFETCH_DAYS),
            size_days=WINDOW_DAYS[stream.name],
        ):
            yield Page(
                payload=self._payload(stream.name, window.first, window.last),
                cursor=window.cursor,
                progress=window.progress,
            )

    def pages_between(self, stream: Stream, first: date, last: date) -> Iterator[Page]:
        size = timedelta(days=WINDOW_DAYS[stream.name])
        start = first
        while start <= last:
            end = min(start + size - timedelta(days=1), last)
            yield Page(payload=self._payload(stream.name, start, end))
            start = end + timedelta(days=1)

    def _payload(self, data_type: str, first: date, last: date) -> dict[str, Any]:
        return {
            "data_type": data_type,
            "first_day": first.isoformat(),
            "last_day": last.isoformat(),
            "dataPoints": self._window(data_type, first, last),
        }

    def _window(self, data_type: str, first: date, last: date) -> list[dict[str, Any]]:
        field = FILTERS[data_type]
        after = last + timedelta(days=1)
        params: dict[str, Any] = {
            "filter": f'{field} >= "{first.isoformat()}" AND {field} < "{after.isoformat()}"',
            "pageSize": PAGE_SIZE[data_type],
        }
        points: list[dict[str, Any]] = []
        url = f"{Fitbit.url('api')}/users/me/dataTypes/{data_type}/dataPoints"
        while True:
            body = self.http.get_json(url, params=params, operation="dataPoints.list")
            points.extend(body.get("dataPoints") or [])
            token = body.get("nextPageToken")
            if not token:
                return points
            params = {**params, "pageToken": token}
