"""Bad input gets the provider's 4xx (or RescueTime's 200 error), never a 500."""

import json

import pytest

from .conftest import bearer, plaid_post

pytestmark = pytest.mark.django_db

GMAIL = "/sandbox/google/gmail/v1/users/me"
HEALTH = "/sandbox/google/health/v4/users/me/dataTypes"


def test_gmail(client, gmail_token):
    auth = bearer(gmail_token["access_token"])
    for url in [
        f"{GMAIL}/messages?maxResults=abc",
        f"{GMAIL}/messages?pageToken=%25%25",
        f"{GMAIL}/messages?pageToken=WzEwMDAwMDAwMDAwMDAwMDAwMDAsImEiXQ",
        f"{GMAIL}/messages?q=after:99999999999999 before:0001/01/01 newer_than:99999999999d",
        f"{GMAIL}/messages/zzzz",
        f"{GMAIL}/history?startHistoryId=-1",
        f"{GMAIL}/history?startHistoryId=99999999999999999999&pageToken=abc",
    ]:
        assert client.get(url, **auth).status_code in (200, 400, 404), url
    watch = client.post(f"{GMAIL}/watch", "not json", content_type="application/json", **auth)
    assert watch.status_code == 400


def test_health(client, health_token):
    auth = bearer(health_token["access_token"])
    for flt in [
        'steps.interval.civil_start_time >= "9999-12-31"',
        'steps.interval.civil_start_time < "0001-01-01"',
        'steps.interval.start_time >= "9999-12-31T23:59:59Z"',
        '(steps.interval.start_time >= "2024-01-01T00:00:00Z"',
        ")",
        '"',
        "AND AND",
        'steps.interval.civil_start_time >= "2024-01-01T25:00"',
    ]:
        response = client.get(f"{HEALTH}/steps/dataPoints", {"filter": flt}, **auth)
        assert response.status_code in (200, 400), flt
    for token in ["e30", "W10", "eyJrIjpbMSwiYSJdLCJmIjoxfQ"]:
        response = client.get(f"{HEALTH}/steps/dataPoints", {"pageToken": token}, **auth)
        assert response.status_code == 400
    for body in ["[]", "{}", '{"range": {"start": {"date": {"year": "x"}}, "end": 5}}']:
        response = client.post(
            f"{HEALTH}/steps/dataPoints:dailyRollUp", body, content_type="application/json", **auth
        )
        assert response.status_code == 400, body


def test_plaid(client, plaid_item):
    token = plaid_item["access_token"]
    link_base = {"client_name": "x", "language": "en", "products": ["transactions"]}
    for path, body in [
        ("transactions/sync", {"access_token": token, "count": 5.0}),
        ("transactions/sync", {"access_token": token, "cursor": "abc"}),
        ("transactions/sync", {"access_token": token, "cursor": 5}),
        ("transactions/sync", {"access_token": ["x"]}),
        (
            "link/token/create",
            {**link_base, "country_codes": "US", "user": {"client_user_id": "a"}},
        ),
        ("link/token/create", {**link_base, "country_codes": ["US"], "user": "bob"}),
        ("item/public_token/exchange", {"public_token": 5}),
        ("webhook_verification_key/get", {}),
    ]:
        response = plaid_post(client, path, body)
        assert response.status_code == 400, (path, body)
        assert response.json()["error_type"] in ("INVALID_REQUEST", "INVALID_INPUT")
    odd_keys = client.post(
        "/sandbox/plaid/item/get",
        json.dumps({"client_id": ["x"], "secret": {}}),
        content_type="application/json",
    )
    assert odd_keys.status_code == 400
    assert client.get("/sandbox/plaid/item/get").status_code == 405
    assert plaid_post(client, "link/public_token/create", {}, auth=False).status_code == 400


def test_rescuetime_and_faults_and_oauth(client):
    far = "9999-12-31"
    for query in [
        {"key": "sandbox-x", "format": "json", "restrict_begin": "0001-01-01"},
        {"key": "sandbox-x", "format": "json", "restrict_begin": far, "restrict_end": far},
        {"key": "sandbox-", "format": "json"},
        {"format": "json"},
    ]:
        assert client.get("/sandbox/rescuetime/anapi/data", query).status_code == 200, query
    odd = {"provider": ["x"], "account": {}, "fault": 3, "count": "2"}
    response = client.post("/sandbox/_faults", json.dumps(odd), content_type="application/json")
    assert response.status_code == 400
    creds = {"client_id": "sandbox-gmail-client", "client_secret": "sandbox-gmail-secret"}
    assert (
        client.post("/sandbox/google/token", {"grant_type": "refresh_token", **creds}).status_code
        == 400
    )
    assert (
        client.post("/sandbox/google/token", {"grant_type": "password", **creds}).status_code == 400
    )
    assert client.post("/sandbox/google/token", HTTP_AUTHORIZATION="Basic !!!").status_code == 401
    assert client.post("/sandbox/google/revoke").status_code == 400
    bad_redirect = {
        "client_id": "sandbox-gmail-client",
        "redirect_uri": "javascript:alert(1)",
        "response_type": "code",
        "scope": "email",
    }
    assert client.get("/sandbox/google/o/oauth2/v2/auth", bad_redirect).status_code == 400
    bad_email = {
        **bad_redirect,
        "redirect_uri": "http://x.example/cb",
        "decision": "allow",
        "email": "bad",
    }
    assert client.post("/sandbox/google/o/oauth2/v2/auth", bad_email).status_code == 400
