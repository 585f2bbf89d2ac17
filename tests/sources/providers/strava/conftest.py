"""Strava's test helpers: an athlete connected the real way against the sandbox, and the
application's rate budgets switched on (they live in the database, emptied after each test)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.utils import timezone

from sources.models import UserDataSource
from sources.providers.strava.client import quarter_start
from sources.providers.strava.provider import Strava
from sources.providers.strava.sandbox import athlete_id_for
from sources.services import connection_upsert, oauth_credentials_from

REDIRECT_URI = "http://127.0.0.1/callback"


@pytest.fixture
def mid_quarter(monkeypatch):
    """The clock moved (it still runs) to the middle of a 15-minute window, so a test's calls
    never straddle the boundary where Strava's short window resets."""
    real_now = timezone.now
    start = real_now()
    offset = quarter_start(start) + timedelta(minutes=7, seconds=30) - start
    monkeypatch.setattr(timezone, "now", lambda: real_now() + offset)


@pytest.fixture(autouse=True)
def rate_budget_on(settings):
    settings.SIBLING_BUDGETS = True
    settings.STRAVA_RATE_LIMIT_RESERVE = 5


def new_username() -> str:
    return f"athlete_{uuid.uuid4().hex[:8]}"


def strava_consent(username: str, *, scope: str = "activity:read_all", **form: str) -> dict:
    """Consent on the sandbox's page as ``username`` (no browser): the redirect's parameters."""
    client = Strava.client_credentials()
    answer = requests.post(
        Strava.url("authorize"),
        data={
            "client_id": client["client_id"],
            "redirect_uri": REDIRECT_URI,
            "response_type": "code",
            "approval_prompt": "force",
            "scope": scope,
            "state": "state-1",
            "username": username,
            "decision": "allow",
            **form,
        },
        allow_redirects=False,
        timeout=30,
    )
    assert answer.status_code == 302, answer.text
    return {k: v[0] for k, v in parse_qs(urlsplit(answer.headers["Location"]).query).items()}


def strava_exchange(code: str) -> requests.Response:
    client = Strava.client_credentials()
    return requests.post(
        Strava.url("token"),
        data={**client, "code": code, "grant_type": "authorization_code"},
        timeout=30,
    )


def strava_credentials(username: str) -> dict[str, Any]:
    """What a connection stores after consenting as ``username``."""
    params = strava_consent(username)
    token = strava_exchange(params["code"])
    assert token.status_code == 200, token.text
    body = token.json()
    return oauth_credentials_from(
        {**body, "scope": params["scope"].replace(",", " ")}, uid=str(body["athlete"]["id"])
    )


def strava_connect(person: Any, username: str | None = None) -> UserDataSource:
    username = username or new_username()
    credentials = strava_credentials(username)
    connection = connection_upsert(
        user=person,
        provider=Strava,
        external_account_id=credentials["uid"],
        credentials=credentials,
        account_label="",
    )
    connection.sandbox_account = athlete_id_for(username)
    return connection
