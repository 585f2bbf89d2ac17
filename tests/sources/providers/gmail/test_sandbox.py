import itertools
import time

import pytest

from sources.providers.gmail.provider import Gmail
from sources.sandbox.faults import fault_set
from tests.sources.sandbox.oauth import EMAIL, bearer, google_client, google_tokens

pytestmark = pytest.mark.django_db

API = "/sandbox/google/gmail/v1/users/me"


@pytest.fixture
def auth(gmail_token):
    return bearer(gmail_token["access_token"])


def all_pages(client, auth, **params):
    ids, token, pages = [], None, 0
    while True:
        query = {**params, **({"pageToken": token} if token else {})}
        body = client.get(f"{API}/messages", query, **auth).json()
        pages += 1
        assert isinstance(body["resultSizeEstimate"], int)
        ids += [m["id"] for m in body.get("messages", [])]
        token = body.get("nextPageToken")
        if not token:
            return ids, pages


def test_profile_and_paging_cover_every_message_once(client, auth):
    profile = client.get(f"{API}/profile", **auth).json()
    assert profile["emailAddress"] == EMAIL
    assert profile["historyId"].isdigit()
    assert profile["messagesTotal"] > 100 and profile["threadsTotal"] <= profile["messagesTotal"]
    ids, pages = all_pages(client, auth, maxResults=500)
    assert len(ids) == len(set(ids)) == profile["messagesTotal"]
    assert pages >= 2
    first = client.get(f"{API}/messages", {"maxResults": 10}, **auth).json()
    assert [m["id"] for m in first["messages"]] == ids[:10]
    assert set(first["messages"][0]) == {"id", "threadId"}


def test_empty_list_omits_messages_and_filters_apply(client, auth):
    empty = client.get(f"{API}/messages", {"q": "after:2999/01/01"}, **auth).json()
    assert empty == {"resultSizeEstimate": 0}
    sent = client.get(f"{API}/messages", {"labelIds": "SENT", "maxResults": 5}, **auth).json()
    for ref in sent["messages"]:
        message = client.get(f"{API}/messages/{ref['id']}", {"format": "minimal"}, **auth).json()
        assert "SENT" in message["labelIds"]


def test_message_formats(client, auth):
    mid = client.get(f"{API}/messages", {"maxResults": 1}, **auth).json()["messages"][0]["id"]
    full = client.get(f"{API}/messages/{mid}", **auth).json()
    names = {h["name"] for h in full["payload"]["headers"]}
    assert {"From", "To", "Subject", "Date"} <= names
    assert full["internalDate"].isdigit() and full["historyId"].isdigit()
    assert full["snippet"] and full["sizeEstimate"] > 0 and full["labelIds"]
    metadata = client.get(
        f"{API}/messages/{mid}?format=metadata&metadataHeaders=From&metadataHeaders=Subject", **auth
    ).json()
    assert [h["name"] for h in metadata["payload"]["headers"]] == ["From", "Subject"]
    assert "payload" not in client.get(f"{API}/messages/{mid}?format=minimal", **auth).json()
    assert client.get(f"{API}/messages/{mid}?format=raw", **auth).json()["raw"]
    assert client.get(f"{API}/messages/0123456789abcdef", **auth).status_code == 404
    assert client.get(f"{API}/messages/{mid}?format=bogus", **auth).status_code == 400


def test_history_follows_new_activity_and_404s_when_stale(client, auth):
    start = client.get(f"{API}/profile", **auth).json()["historyId"]
    quiet = client.get(f"{API}/history", {"startHistoryId": start}, **auth).json()
    assert quiet == {"historyId": start}

    fault_set("google", EMAIL, "new_activity")
    body = client.get(f"{API}/history", {"startHistoryId": start, "maxResults": 2}, **auth).json()
    assert len(body["history"]) == 2 and body["nextPageToken"]
    records = list(body["history"])
    while body.get("nextPageToken"):
        body = client.get(
            f"{API}/history",
            {"startHistoryId": start, "maxResults": 2, "pageToken": body["nextPageToken"]},
            **auth,
        ).json()
        records += body.get("history", [])
    ids = [int(r["id"]) for r in records]
    assert ids == sorted(ids) and ids[0] > int(start)
    assert any(b - a > 1 for a, b in itertools.pairwise(ids))  # not contiguous
    assert int(body["historyId"]) == ids[-1]
    added = [r for r in records if "messagesAdded" in r]
    deleted = [r for r in records if "messagesDeleted" in r]
    assert len(added) == 3 and len(deleted) == 1
    assert any("labelsRemoved" in r for r in records)
    new_id = added[0]["messagesAdded"][0]["message"]["id"]
    assert client.get(f"{API}/messages/{new_id}", **auth).status_code == 200
    gone = deleted[0]["messagesDeleted"][0]["message"]["id"]
    assert client.get(f"{API}/messages/{gone}", **auth).status_code == 404
    latest = client.get(f"{API}/messages", {"maxResults": 3}, **auth).json()["messages"]
    assert {m["id"] for m in latest} == {r["messagesAdded"][0]["message"]["id"] for r in added}

    only_added = client.get(
        f"{API}/history", {"startHistoryId": start, "historyTypes": "messageAdded"}, **auth
    ).json()
    assert len(only_added["history"]) == 3

    stale = client.get(f"{API}/history", {"startHistoryId": "1"}, **auth)
    assert stale.status_code == 404
    assert stale.json()["error"]["code"] == 404
    assert client.get(f"{API}/history", **auth).status_code == 400


def test_watch(client, auth):
    body = client.post(
        f"{API}/watch",
        {"topicName": "projects/p/topics/t", "labelIds": ["INBOX"]},
        content_type="application/json",
        **auth,
    ).json()
    assert body["historyId"].isdigit()
    days = (int(body["expiration"]) / 1000 - time.time()) / 86400
    assert 6.9 < days <= 7


def test_scope_and_user_checks(client, auth):
    identity_only = google_tokens(client, scope="openid email", client_pair=google_client(Gmail))
    response = client.get(f"{API}/profile", **bearer(identity_only["access_token"]))
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["status"] == "PERMISSION_DENIED"
    assert error["details"][0]["reason"] == "ACCESS_TOKEN_SCOPE_INSUFFICIENT"
    other = client.get("/sandbox/google/gmail/v1/users/someone@example.com/profile", **auth)
    assert other.status_code == 403
    assert client.get(f"/sandbox/google/gmail/v1/users/{EMAIL}/profile", **auth).status_code == 200


def test_metadata_scope_refuses_full_format_and_q(client):
    tokens = google_tokens(
        client,
        scope="https://www.googleapis.com/auth/gmail.metadata",
        client_pair=google_client(Gmail),
    )
    auth = bearer(tokens["access_token"])
    mid = client.get(f"{API}/messages", {"maxResults": 1}, **auth).json()["messages"][0]["id"]
    assert client.get(f"{API}/messages/{mid}", **auth).status_code == 403
    assert client.get(f"{API}/messages/{mid}?format=metadata", **auth).status_code == 200
    assert client.get(f"{API}/messages", {"q": "is:unread"}, **auth).status_code == 403


def test_faults_rate_limit_server_error_malformed(client, auth):
    fault_set("google", EMAIL, "rate_limit", count=2)
    for _ in range(2):
        limited = client.get(f"{API}/profile", **auth)
        assert limited.status_code == 429
        assert limited["Retry-After"].isdigit()
        assert limited.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert client.get(f"{API}/profile", **auth).status_code == 200

    fault_set("google", EMAIL, "server_error")
    failed = client.get(f"{API}/profile", **auth)
    assert failed.status_code == 500 and failed.json()["error"]["code"] == 500
    assert client.get(f"{API}/profile", **auth).status_code == 200

    mid = client.get(f"{API}/messages", {"maxResults": 1}, **auth).json()["messages"][0]["id"]
    fault_set("google", EMAIL, "malformed")
    broken = client.get(f"{API}/messages/{mid}", **auth).json()
    assert not broken["internalDate"].isdigit() and "headers" not in broken["payload"]
    healthy = client.get(f"{API}/messages/{mid}", **auth).json()
    assert healthy["internalDate"].isdigit() and healthy["payload"]["headers"]


def test_missing_bearer_is_401(client):
    assert client.get(f"{API}/profile").status_code == 401
    assert client.get(f"{API}/profile", **bearer("ya29.nothing")).status_code == 401


def test_faults_address_the_google_account_by_provider_id_too(client, auth):
    """A Gmail account is a Google account: a fault set for the provider id reaches it."""
    fault_set("gmail", EMAIL.upper(), "rate_limit")
    assert client.get(f"{API}/profile", **auth).status_code == 429
    assert client.get(f"{API}/profile", **auth).status_code == 200


def test_bad_input_is_a_google_error_never_a_500(client, auth):
    for url in [
        f"{API}/messages?maxResults=abc",
        f"{API}/messages?pageToken=%25%25",
        f"{API}/messages?pageToken=WzEwMDAwMDAwMDAwMDAwMDAwMDAsImEiXQ",
        f"{API}/messages?q=after:99999999999999 before:0001/01/01 newer_than:99999999999d",
        f"{API}/messages/zzzz",
        f"{API}/history?startHistoryId=-1",
        f"{API}/history?startHistoryId=99999999999999999999&pageToken=abc",
    ]:
        assert client.get(url, **auth).status_code in (200, 400, 404), url
    watch = client.post(f"{API}/watch", "not json", content_type="application/json", **auth)
    assert watch.status_code == 400


def test_consent_page_describes_the_scopes_in_words(client):
    page = client.get(
        "/sandbox/google/o/oauth2/v2/auth",
        {
            "client_id": google_client(Gmail)[0],
            "redirect_uri": "http://testserver/complete/",
            "response_type": "code",
            "scope": f"openid email {Gmail.scopes[0]}",
        },
    )
    assert "View your email messages and settings" in page.content.decode()


@pytest.mark.parametrize("field", ["labelFilterBehavior", "labelFilterAction"])
def test_watch_takes_only_the_discovery_documents_enum_values(client, auth, field):
    import json as json_module
    from pathlib import Path

    import googleapiclient

    document = Path(googleapiclient.__file__).parent / "discovery_cache/documents/gmail.v1.json"
    schema = json_module.loads(document.read_text())["schemas"]["WatchRequest"]
    allowed = schema["properties"][field]["enum"]
    assert allowed == ["include", "exclude"]
    for value in allowed:
        body = {"topicName": "projects/p/topics/t", "labelIds": ["INBOX"], field: value}
        ok = client.post(f"{API}/watch", body, content_type="application/json", **auth)
        assert ok.status_code == 200, ok.content
    for value in ("INCLUDE", "LABEL_FILTER_BEHAVIOR_UNSPECIFIED", 1):
        body = {"topicName": "projects/p/topics/t", "labelIds": ["INBOX"], field: value}
        refused = client.post(f"{API}/watch", body, content_type="application/json", **auth)
        assert refused.status_code == 400
        error = refused.json()["error"]
        assert error["code"] == 400 and error["status"] == "INVALID_ARGUMENT"
        assert error["message"].startswith("Invalid value at 'label_filter_")
        violation = error["details"][0]
        assert violation["@type"] == "type.googleapis.com/google.rpc.BadRequest"
        assert violation["fieldViolations"][0]["field"].startswith("label_filter_")


@pytest.mark.parametrize(
    ("fault", "reason", "message"),
    [
        ("user_rate_limit_403", "userRateLimitExceeded", "User Rate Limit Exceeded"),
        ("rate_limit_403", "rateLimitExceeded", "Rate Limit Exceeded"),
    ],
)
def test_rate_limit_faults_answer_gmails_403(client, auth, fault, reason, message):
    fault_set("google", EMAIL, fault)
    response = client.get(f"{API}/profile", **auth)
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == 403 and error["message"] == message
    assert error["errors"][0]["reason"] == reason
    assert error["errors"][0]["domain"] == "usageLimits"
    assert client.get(f"{API}/profile", **auth).status_code == 200  # once


def test_a_mailbox_seeded_to_a_size_holds_that_many_messages_a_day(client, auth):
    from sources.providers.gmail.sandbox import HISTORY_DAYS, mailbox_size_set

    usual = client.get(f"{API}/profile", **auth).json()["messagesTotal"]
    mailbox_size_set(EMAIL, 60)
    total = client.get(f"{API}/profile", **auth).json()["messagesTotal"]
    # Every full day holds 60; the day the account was first seen stops at that moment.
    assert 60 * HISTORY_DAYS <= total <= 60 * (HISTORY_DAYS + 1) and total > usual
    week = client.get(f"{API}/messages", {"q": "newer_than:7d", "maxResults": 500}, **auth).json()
    assert len(week["messages"]) >= 6 * 60
    ref = week["messages"][-1]
    assert client.get(f"{API}/messages/{ref['id']}", **auth).json()["id"] == ref["id"]
    for wrong in (0, 0x800):
        with pytest.raises(ValueError):
            mailbox_size_set(EMAIL, wrong)
