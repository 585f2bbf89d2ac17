"""Google Calendar's sandbox against its contract: Google's discovery document calendar.v3 (as
google-api-python-client ships it), for every call and parameter set the client makes; and the
recorded fixtures against the same document."""

from __future__ import annotations

from urllib.parse import quote

import pytest
import requests

from sources.providers.google_calendar.client import CALENDARS_PAGE_SIZE, EVENTS_PAGE_SIZE
from sources.providers.google_calendar.provider import GoogleCalendar
from tests.sources.providers.contracts import (
    discovery_errors,
    fixture_cases,
    fixtures_unlisted,
    google_error_errors,
    google_fixture_errors,
)
from tests.sources.providers.kit import sandbox_fault

API = ("calendar", "v3")

# Each fixture and the method whose answer it records.
FIXTURES = {
    "calendar_list": "calendar.calendarList.list",
    "events_all_day": "calendar.events.list",
    "events_first_page": "calendar.events.list",
    "events_incremental": "calendar.events.list",
    "events_next_page": "calendar.events.list",
    "events_recurring_instances": "calendar.events.list",
    "watch_response": "calendar.events.watch",
    "error_410_full_sync_required": "error",
}
NOT_IN_THE_DOCUMENT = {
    "notification_exists": "a push notification is headers only: not in the discovery document",
    "notification_sync": "a push notification is headers only: not in the discovery document",
}


def test_every_fixture_is_covered():
    assert fixtures_unlisted("google_calendar", FIXTURES, NOT_IN_THE_DOCUMENT) == set()


@pytest.mark.parametrize("name", fixture_cases(FIXTURES, NOT_IN_THE_DOCUMENT))
def test_fixture_keeps_the_contract(name):
    assert google_fixture_errors("google_calendar", API, name, FIXTURES[name]) == []


@pytest.mark.django_db(transaction=True)
def test_every_call_of_the_client_answers_as_the_discovery_document_says(connection):
    # One connection for every call: each answer is checked, and every drift reported at once.
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {connection.credentials['access_token']}"
    api = GoogleCalendar.url("api")
    errors: list[str] = []

    def check(method_id: str, answer: requests.Response, status: int = 200) -> dict:
        assert answer.status_code == status, (method_id, answer.status_code, answer.text[:300])
        body = answer.json() if answer.content else None
        errors.extend(
            google_error_errors(body) if status >= 400 else discovery_errors(*API, method_id, body)
        )
        return body

    calendars = check(
        "calendar.calendarList.list",
        session.get(
            f"{api}/users/me/calendarList",
            params={"maxResults": CALENDARS_PAGE_SIZE, "showHidden": "true"},
            timeout=30,
        ),
    )
    calendar_id = calendars["items"][0]["id"]
    events = f"{api}/calendars/{quote(calendar_id, safe='')}/events"
    listing = {"singleEvents": "true", "showDeleted": "true", "maxResults": 5}
    page = check(
        "calendar.events.list",
        session.get(events, params={**listing, "timeMin": "2000-01-01T00:00:00Z"}, timeout=30),
    )
    while "nextPageToken" in page:
        page = check(
            "calendar.events.list",
            session.get(
                events,
                params={
                    **listing,
                    "timeMin": "2000-01-01T00:00:00Z",
                    "pageToken": page["nextPageToken"],
                },
                timeout=30,
            ),
        )
    sandbox_fault(connection, "new_events")
    changed = check(
        "calendar.events.list",
        session.get(
            events,
            params={**listing, "maxResults": EVENTS_PAGE_SIZE, "syncToken": page["nextSyncToken"]},
            timeout=30,
        ),
    )
    assert changed.get("items"), "no changes to check"
    sandbox_fault(connection, "full_sync_required")
    check(
        "error",
        session.get(events, params={**listing, "syncToken": page["nextSyncToken"]}, timeout=30),
        status=410,
    )
    channel = check(
        "calendar.events.watch",
        session.post(
            f"{events}/watch",
            json={
                "id": "contract-channel",
                "type": "web_hook",
                "address": "https://example.com/webhooks/calendar/",
                "token": "channel-token",
                "expiration": 4102444800000,
            },
            timeout=30,
        ),
    )
    check(
        "calendar.channels.stop",
        session.post(
            f"{api}/channels/stop",
            json={"id": channel["id"], "resourceId": channel["resourceId"]},
            timeout=30,
        ),
        status=204,
    )
    # The error bodies of the sandbox's faults keep Google's envelope too.
    for fault, status in (("rate_limit", 429), ("user_rate_limit", 403)):
        sandbox_fault(connection, fault)
        check("error", session.get(events, params=listing, timeout=30), status=status)
    assert errors == []
