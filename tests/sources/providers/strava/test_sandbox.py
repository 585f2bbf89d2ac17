"""The sandbox's Strava, as Strava documents it: consent with scopes that can be unticked,
single-use codes, rotating refresh tokens, deauthorization, the activities list and the
application's rate limits. Shapes are checked against the documented payloads in fixtures/."""

from __future__ import annotations

import json
import time
from datetime import datetime
from urllib.parse import parse_qs, urlsplit

import pytest

from sources.providers.strava.provider import Strava
from tests.sources.providers.kit import fixture

pytestmark = pytest.mark.django_db
CLIENT = {"client_id": "sandbox-strava-client", "client_secret": "sandbox-strava-secret"}
REDIRECT = "http://testserver/complete/strava/"


def consent(client, *, scope="activity:read_all", decision="allow", username="sandbox_athlete",
            **form) -> dict:  # fmt: skip
    answer = client.post(
        "/sandbox/strava/oauth/authorize",
        {
            "client_id": CLIENT["client_id"],
            "redirect_uri": REDIRECT,
            "response_type": "code",
            "scope": scope,
            "state": "s-1",
            "username": username,
            "decision": decision,
            **form,
        },
    )
    assert answer.status_code == 302, answer.content
    assert answer["Location"].startswith(REDIRECT)
    return {k: v[0] for k, v in parse_qs(urlsplit(answer["Location"]).query).items()}


def token(client, **form):
    return client.post("/sandbox/strava/oauth/token", {**CLIENT, **form})


def tokens(client, **consent_args) -> dict:
    answer = token(
        client, grant_type="authorization_code", code=consent(client, **consent_args)["code"]
    )
    assert answer.status_code == 200, answer.content
    return answer.json()


def _epoch(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


def api(client, path, access_token, **params):
    return client.get(
        f"/sandbox/strava/api/v3{path}", params, HTTP_AUTHORIZATION=f"Bearer {access_token}"
    )


def test_the_consent_page_lists_each_scope_to_untick(client):
    page = client.get(
        "/sandbox/strava/oauth/authorize",
        {
            "client_id": CLIENT["client_id"],
            "redirect_uri": REDIRECT,
            "response_type": "code",
            "scope": "read,activity:read_all",
            "state": "s",
        },
    )
    text = page.content.decode()
    assert page.status_code == 200 and "Sandbox" in text
    assert text.count('type="checkbox"') == 2 and "Only You" in text


@pytest.mark.parametrize(
    "change",
    [
        {"client_id": "someone-else"},
        {"redirect_uri": "javascript:alert(1)"},
        {"response_type": "token"},
        {"scope": "read activity:read_all"},  # spaces: Strava's scopes are comma-separated
        {"scope": ""},
    ],
)
def test_a_bad_authorize_request_is_an_error_page(client, change):
    params = {"client_id": CLIENT["client_id"], "redirect_uri": REDIRECT, "response_type": "code",
              "scope": "activity:read_all", **change}  # fmt: skip
    assert client.get("/sandbox/strava/oauth/authorize", params).status_code == 400


def test_an_unticked_scope_is_left_out_of_the_redirect(client):
    params = consent(client, scope="read,activity:read_all", consent_form="1", accepted="read")
    assert params["scope"] == "read" and params["state"] == "s-1"


def test_a_refusal_redirects_with_access_denied(client):
    params = consent(client, decision="deny")
    assert params == {"state": "s-1", "error": "access_denied"}


def test_the_exchange_answers_as_documented_and_a_code_works_once(client):
    params = consent(client)
    first = token(client, grant_type="authorization_code", code=params["code"])
    body = first.json()
    assert set(body) == set(fixture("strava", "token__authorization_code"))
    assert body["expires_in"] > 21500 and body["athlete"]["id"] > 0
    again = token(client, grant_type="authorization_code", code=params["code"])
    assert again.status_code == 400 and again.json() == fixture("strava", "token__invalid_code")


def test_a_refresh_rotates_the_refresh_token_and_keeps_a_fresh_access_token(client):
    issued = tokens(client)
    refreshed = token(client, grant_type="refresh_token", refresh_token=issued["refresh_token"])
    body = refreshed.json()
    assert set(body) == set(fixture("strava", "token__refresh"))
    assert body["refresh_token"] != issued["refresh_token"]
    # More than an hour left: the same access token comes back.
    assert body["access_token"] == issued["access_token"]
    old = token(client, grant_type="refresh_token", refresh_token=issued["refresh_token"])
    assert old.status_code == 400
    assert old.json() == fixture("strava", "token__invalid_refresh_token")


def test_a_refresh_with_an_expired_access_token_issues_a_new_one(client):
    issued = tokens(client)
    athlete = str(issued["athlete"]["id"])
    client.post(
        "/sandbox/_faults",
        json.dumps({"provider": "strava", "account": athlete, "fault": "expire_access_token"}),
        content_type="application/json",
    )
    assert api(client, "/athlete", issued["access_token"]).status_code == 401
    body = token(client, grant_type="refresh_token", refresh_token=issued["refresh_token"]).json()
    assert body["access_token"] != issued["access_token"]
    assert api(client, "/athlete", body["access_token"]).status_code == 200


def test_deauthorize_ends_every_token(client):
    issued = tokens(client)
    answer = client.post(
        "/sandbox/strava/oauth/deauthorize", {"access_token": issued["access_token"]}
    )
    assert answer.status_code == 200
    refused = api(client, "/athlete/activities", issued["access_token"])
    assert refused.status_code == 401 and refused.json() == fixture(
        "strava", "error__authorization"
    )
    assert (
        token(client, grant_type="refresh_token", refresh_token=issued["refresh_token"]).status_code
        == 400
    )
    again = client.post(
        "/sandbox/strava/oauth/deauthorize", {"access_token": issued["access_token"]}
    )
    assert again.status_code == 401


def test_activities_page_by_after_ascending_and_newest_first_without(client):
    access = tokens(client, username="pager")["access_token"]
    everything = api(client, "/athlete/activities", access, per_page=200).json()
    assert everything, "the seeded history is not empty"
    starts = [a["start_date"] for a in everything]
    assert starts == sorted(starts, reverse=True)  # newest first without `after`
    assert all(a["id"] > 2**53 for a in everything)  # int64 ids beyond a float's precision
    assert set(fixture("strava", "athlete_activities__page")[0]) >= set(everything[0]) - {
        "visibility"  # returned, not documented
    }
    after = int(time.time()) - 60 * 86400
    seen = []
    page = 1
    while True:
        chunk = api(
            client, "/athlete/activities", access, after=after, page=page, per_page=7
        ).json()
        if not chunk:
            break
        seen += chunk
        page += 1
    since = [a for a in reversed(everything) if _epoch(a["start_date"]) > after]
    assert seen and [a["id"] for a in seen] == [a["id"] for a in since]
    recent = api(client, "/athlete/activities", access, after=1, before=2).json()
    assert recent == fixture("strava", "athlete_activities__empty")


def test_only_me_activities_need_activity_read_all(client):
    full = tokens(client, username="private_person")["access_token"]
    partial = tokens(client, username="private_person", scope="activity:read")["access_token"]
    since = int(time.time()) - 60 * 86400
    every = api(client, "/athlete/activities", full, after=since, per_page=200).json()
    shown = api(client, "/athlete/activities", partial, after=since, per_page=200).json()
    hidden = [a for a in every if a["visibility"] == "only_me"]
    assert hidden and len(shown) == len(every) - len(hidden)


def test_a_token_without_an_activity_scope_gets_401(client):
    access = tokens(client, scope="read")["access_token"]
    answer = api(client, "/athlete/activities", access)
    assert answer.status_code == 401
    assert answer.json() == fixture("strava", "error__missing_activity_scope")


@pytest.mark.parametrize(
    "params", [{"page": "x"}, {"page": "0"}, {"per_page": "-1"}, {"after": "soon"}]
)
def test_bad_list_parameters_are_400(client, params):
    access = tokens(client)["access_token"]
    assert api(client, "/athlete/activities", access, **params).status_code == 400


def test_every_answer_carries_the_rate_limits_and_over_them_is_429(client, settings, mid_quarter):
    settings.STRAVA_SANDBOX_RATE_LIMIT = "1000,3000"
    settings.STRAVA_SANDBOX_READ_RATE_LIMIT = "2,1000"
    access = tokens(client)["access_token"]
    first = api(client, "/athlete", access)
    assert first["X-RateLimit-Limit"] == "1000,3000" and first["X-RateLimit-Usage"] == "1,1"
    assert first["X-ReadRateLimit-Limit"] == "2,1000" and first["X-ReadRateLimit-Usage"] == "1,1"
    api(client, "/athlete", access)
    over = api(client, "/athlete", access)
    assert over.status_code == 429 and over.json() == fixture("strava", "error__rate_limit")
    # Refused calls count too.
    assert over["X-ReadRateLimit-Usage"] == "3,3"


def test_the_shared_faults_apply_to_an_athlete(client):
    issued = tokens(client)
    athlete = str(issued["athlete"]["id"])
    for fault, status in (("rate_limit", 429), ("server_error", 500)):
        set_fault = client.post(
            "/sandbox/_faults",
            json.dumps({"provider": "strava", "account": athlete, "fault": fault}),
            content_type="application/json",
        )
        assert set_fault.status_code == 200, set_fault.content
        assert api(client, "/athlete/activities", issued["access_token"]).status_code == status
    assert api(client, "/athlete/activities", issued["access_token"]).status_code == 200


def test_the_provider_talks_to_the_sandbox_by_default():
    assert Strava.sandboxed()
    assert Strava.url("api").endswith("/sandbox/strava/api/v3")


def test_an_athlete_past_the_applications_cap_is_refused_with_403(client, settings):
    # A new application is "single-player" until Strava raises its cap.
    settings.STRAVA_SANDBOX_ATHLETE_CAP = 1
    first = tokens(client, username="cap_first")
    code = consent(client, username="cap_second")["code"]
    refused = token(client, grant_type="authorization_code", code=code)
    assert refused.status_code == 403
    assert refused.json()["message"] == "Limit of connected athletes exceeded"
    # The connected athlete may consent again; once deauthorized, the place is free.
    assert tokens(client, username="cap_first")["athlete"]["id"] == first["athlete"]["id"]
    ended = client.post(
        "/sandbox/strava/oauth/deauthorize", {"access_token": first["access_token"]}
    )
    assert ended.status_code == 200
    assert tokens(client, username="cap_second")["athlete"]["username"] == "cap_second"


def test_a_short_page_is_not_the_last(client):
    # "The number of items returned may be lower than the requested page size, even when that
    # page is not the last": without activity:read_all, "only me" ones leave gaps in pages.
    full = tokens(client, username="private_pager")["access_token"]
    partial = tokens(client, username="private_pager", scope="activity:read")["access_token"]
    since = int(time.time()) - 120 * 86400
    every = api(client, "/athlete/activities", full, after=since, per_page=200).json()
    pages = []
    while chunk := api(
        client, "/athlete/activities", partial, after=since, page=len(pages) + 1, per_page=5
    ).json():
        pages.append(chunk)
    assert any(len(page) < 5 for page in pages[:-1])
    shown = [a["id"] for page in pages for a in page]
    assert shown == [a["id"] for a in every if a["visibility"] != "only_me"]
