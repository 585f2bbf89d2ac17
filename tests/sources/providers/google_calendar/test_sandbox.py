"""The Calendar imitation itself, over HTTP, as Google documents the API: paging, sync token
rules, recurring events both ways, errors, channels."""

from __future__ import annotations

from datetime import date, timedelta
from urllib.parse import quote

import pytest
import requests

from sources.providers.google_calendar.provider import GoogleCalendar
from sources.sandbox.testing import google_credentials
from tests.sources.providers.kit import fixture

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def api(sandbox):
    email = "calendar.sandbox@example.com"
    token = google_credentials(GoogleCalendar, email)["access_token"]

    def call(method: str, path: str, *, bearer: str | None = None, **kwargs) -> requests.Response:
        headers = {"Authorization": f"Bearer {bearer or token}"}
        return requests.request(
            method, f"{GoogleCalendar.url('api')}/{path}", headers=headers, timeout=30, **kwargs
        )

    call.email = email
    return call


def events(api, calendar: str = "primary", **params) -> requests.Response:
    return api("GET", f"calendars/{calendar}/events", params=params)


def test_the_calendar_list_pages_and_names_the_primary_calendar(api):
    first = api("GET", "users/me/calendarList", params={"maxResults": 2})
    assert first.status_code == 200
    body = first.json()
    assert body["kind"] == "calendar#calendarList" and len(body["items"]) == 2
    assert body["items"][0]["id"] == api.email and body["items"][0]["primary"] is True
    assert "nextSyncToken" not in body
    rest = api("GET", "users/me/calendarList", params={"pageToken": body["nextPageToken"]})
    assert len(rest.json()["items"]) == 1 and "nextSyncToken" in rest.json()


def test_the_sync_token_comes_on_the_last_page_only_and_returns_nothing_new(api):
    params = {"singleEvents": "true", "showDeleted": "true", "maxResults": 10}
    page = events(api, **params).json()
    seen = len(page["items"])
    while "nextPageToken" in page:
        assert "nextSyncToken" not in page
        page = events(api, pageToken=page["nextPageToken"], **params).json()
        seen += len(page["items"])
    assert seen > 20
    later = events(api, singleEvents="true", syncToken=page["nextSyncToken"]).json()
    assert later["items"] == [] and later["nextSyncToken"]


@pytest.mark.parametrize(
    "extra", [{"timeMin": "2026-01-01T00:00:00Z"}, {"orderBy": "updated"}, {"q": "x"}]
)
def test_a_sync_token_refuses_the_parameters_the_guide_forbids(api, extra):
    token = events(api, singleEvents="true").json()["nextSyncToken"]
    refused = events(api, singleEvents="true", syncToken=token, **extra)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == 400


def test_show_deleted_false_with_a_sync_token_is_refused(api):
    token = events(api, singleEvents="true").json()["nextSyncToken"]
    assert events(api, singleEvents="true", showDeleted="false", syncToken=token).status_code == 400


def test_a_token_it_never_issued_answers_the_documented_410(api):
    gone = events(api, singleEvents="true", syncToken="made-up")
    assert gone.status_code == 410
    assert gone.json() == fixture("google_calendar", "error_410_full_sync_required")


def test_recurring_events_come_as_instances_or_as_their_series(api):
    single = events(api, singleEvents="true", showDeleted="true").json()["items"]
    instances = [e for e in single if e.get("recurringEventId")]
    assert len(instances) == 10 and not any("recurrence" in e for e in single)
    cancelled = [e for e in instances if e["status"] == "cancelled"]
    assert len(cancelled) == 1 and set(cancelled[0]) >= {"id", "originalStartTime"}
    assert "summary" not in cancelled[0]
    moved = [e for e in instances if e.get("start") and e["start"] != e["originalStartTime"]]
    assert len(moved) == 1
    series = events(api, showDeleted="true").json()["items"]
    (master,) = [e for e in series if "recurrence" in e]
    assert master["recurrence"] == ["RRULE:FREQ=WEEKLY;COUNT=10;BYDAY=MO"]
    exceptions = [e for e in series if e.get("recurringEventId")]
    assert len(exceptions) == 2  # the moved and the cancelled instance
    hidden = events(api, singleEvents="true").json()["items"]
    assert not any(e["status"] == "cancelled" for e in hidden)


def test_all_day_events_have_dates_with_an_exclusive_end(api):
    holidays = quote("en.usa#holiday@group.v.calendar.google.com", safe="")
    items = events(api, holidays).json()["items"]
    assert items and all(set(e["start"]) == {"date"} for e in items)
    for event in items:
        start, end = date.fromisoformat(event["start"]["date"]), event["end"]["date"]
        assert end == (start + timedelta(days=1)).isoformat()


def test_errors_have_googles_shapes(api):
    bad = api("GET", "users/me/calendarList", bearer="ya29.forged")
    assert bad.status_code == 401 and bad.json()["error"]["errors"][0]["reason"] == "authError"
    missing = events(api, "nobody@example.org")
    assert missing.status_code == 404
    assert events(api, maxResults="many").status_code == 400


def test_a_token_without_a_calendar_scope_is_refused(sandbox):
    email = "no.scope@example.com"
    from sources.sandbox.testing import google_credentials as consent

    class NoCalendar(GoogleCalendar):
        scopes = ("https://www.googleapis.com/auth/drive.readonly",)

    token = consent(NoCalendar, email)["access_token"]
    refused = requests.get(
        f"{GoogleCalendar.url('api')}/users/me/calendarList",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert refused.status_code == 403


def test_channels_are_unique_and_only_their_owner_stops_them(api, settings, sandbox):
    settings.SIBLING_SANDBOX_SEND_WEBHOOKS = False
    body = {"id": "chan-1", "type": "web_hook", "address": "https://example.org/hook", "token": "t"}
    opened = api("POST", "calendars/primary/events/watch", json=body)
    assert opened.status_code == 200
    channel = opened.json()
    assert channel["kind"] == "api#channel" and channel["id"] == "chan-1"
    assert channel["token"] == "t" and int(channel["expiration"]) > 0
    assert api("POST", "calendars/primary/events/watch", json=body).status_code == 400
    other = google_credentials(GoogleCalendar, "someone.else@example.com")["access_token"]
    stop = {"id": "chan-1", "resourceId": channel["resourceId"]}
    assert api("POST", "channels/stop", json=stop, bearer=other).status_code == 404
    assert api("POST", "channels/stop", json=stop).status_code == 204
    assert api("POST", "channels/stop", json=stop).status_code == 404


def test_hidden_and_deleted_calendars_are_listed_only_when_asked_for(api, monkeypatch):
    from sources.providers.google_calendar.sandbox import Account

    listed = Account.calendars

    def with_hidden_and_deleted(self):
        entries = listed(self)
        return [entries[0], {**entries[1], "hidden": True}, {**entries[2], "deleted": True}]

    monkeypatch.setattr(Account, "calendars", with_hidden_and_deleted)

    def ids(**params) -> list[str]:
        return [
            entry["id"]
            for entry in api("GET", "users/me/calendarList", params=params).json()["items"]
        ]

    primary, family, holidays = (entry["id"] for entry in listed(Account(api.email)))
    assert ids() == [primary]
    assert ids(showHidden="true") == [primary, family]
    assert ids(showDeleted="true") == [primary, holidays]
    assert ids(showHidden="true", showDeleted="true") == [primary, family, holidays]
