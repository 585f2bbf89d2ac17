"""The Google Health API sandbox against its contract: Google's discovery document health.v4 (as
google-api-python-client ships it), for every call and parameter set the client makes; and the
recorded fixtures against the same document."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
import requests

from sources.providers.fitbit.client import FILTERS, PAGE_SIZE
from sources.providers.fitbit.provider import Fitbit
from tests.sources.providers.contracts import (
    discovery_errors,
    fixture_cases,
    fixtures_unlisted,
    google_error_errors,
    google_fixture_errors,
)
from tests.sources.providers.kit import sandbox_fault

API = ("health", "v4")
LIST = "health.users.dataTypes.dataPoints.list"

# Each fixture and the method whose answer it records.
FIXTURES = {
    "identity": "health.users.getIdentity",
    "data_points_heart_rate": LIST,
    "data_points_last_page": LIST,
    "data_points_sleep": LIST,
    "data_points_steps": LIST,
    "error_429_resource_exhausted": "error",
}
NOT_IN_THE_DOCUMENT = {
    "webhook_notification_upsert": "a webhook notification: not part of the discovery document",
    "webhook_verification": "a webhook verification: not part of the discovery document",
}


def test_every_fixture_is_covered():
    assert fixtures_unlisted("fitbit", FIXTURES, NOT_IN_THE_DOCUMENT) == set()


@pytest.mark.parametrize("name", fixture_cases(FIXTURES, NOT_IN_THE_DOCUMENT))
def test_fixture_keeps_the_contract(name):
    assert google_fixture_errors("fitbit", API, name, FIXTURES[name]) == []


def _civil(day: date) -> dict:
    return {"date": {"year": day.year, "month": day.month, "day": day.day}}


@pytest.mark.django_db(transaction=True)
def test_every_call_of_the_client_answers_as_the_discovery_document_says(connection):
    # One connection for every call: each answer is checked, and every drift reported at once.
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {connection.credentials['access_token']}"
    api = f"{Fitbit.url('api')}/users/me"
    errors: list[str] = []

    def check(method_id: str, answer: requests.Response, status: int = 200) -> dict:
        assert answer.status_code == status, (method_id, answer.status_code, answer.text[:300])
        body = answer.json() if answer.content else None
        errors.extend(
            google_error_errors(body) if status >= 400 else discovery_errors(*API, method_id, body)
        )
        return body

    check("health.users.getIdentity", session.get(f"{api}/identity", timeout=30))
    last = date.today()
    first = last - timedelta(days=6)
    for data_type, field in FILTERS.items():
        params = {
            "filter": f'{field} >= "{first.isoformat()}" AND {field} < "{last.isoformat()}"',
            "pageSize": PAGE_SIZE[data_type],
        }
        url = f"{api}/dataTypes/{data_type}/dataPoints"
        body = check(LIST, session.get(url, params=params, timeout=30))
        assert body.get("dataPoints"), f"no {data_type} data points to check"
        # A short page, to check the page token and the page after it.
        paged = check(LIST, session.get(url, params={**params, "pageSize": 2}, timeout=30))
        check(
            LIST,
            session.get(
                url,
                params={**params, "pageSize": 2, "pageToken": paged["nextPageToken"]},
                timeout=30,
            ),
        )
    check(
        "health.users.dataTypes.dataPoints.dailyRollUp",
        session.post(
            f"{api}/dataTypes/steps/dataPoints:dailyRollUp",
            json={"range": {"start": _civil(first), "end": _civil(last)}, "windowSizeDays": 1},
            timeout=30,
        ),
    )
    check("error", session.get(f"{api}/dataTypes/no-such-type/dataPoints", timeout=30), 404)
    sandbox_fault(connection, "rate_limit")
    check("error", session.get(f"{api}/identity", timeout=30), 429)
    assert errors == []
