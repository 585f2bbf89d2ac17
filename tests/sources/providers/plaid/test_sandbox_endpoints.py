"""Plaid's own sandbox endpoints, as the sandbox serves them (/sandbox/public_token/create,
/sandbox/item/fire_webhook, /sandbox/item/reset_login), and Plaid's JSON 404 for any other
path, whoever asks."""

from __future__ import annotations

import pytest

from tests.sources.sandbox.recorder import recorder  # noqa: F401 - a fixture

from .conftest import PLAID_CLIENT, plaid_link, plaid_post

pytestmark = pytest.mark.django_db


def test_sandbox_public_token_create_makes_an_item_the_exchange_accepts(client):
    answer = plaid_post(
        client,
        "sandbox/public_token/create",
        {
            "institution_id": "ins_sandbox_union",
            "initial_products": ["transactions"],
            "options": {
                "webhook": "https://example.com/hook",
                "transactions": {"days_requested": 30},
            },
        },
    )
    assert answer.status_code == 200, answer.content
    assert set(answer.json()) == {"public_token", "request_id"}
    exchanged = plaid_post(
        client, "item/public_token/exchange", {"public_token": answer.json()["public_token"]}
    ).json()
    item = plaid_post(client, "item/get", {"access_token": exchanged["access_token"]}).json()
    assert item["item"]["webhook"] == "https://example.com/hook"
    assert item["item"]["institution_id"] == "ins_sandbox_union"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"initial_products": ["transactions"]}, "MISSING_FIELDS"),
        ({"institution_id": "ins_sandbox_first"}, "MISSING_FIELDS"),
        (
            {"institution_id": "ins_nope", "initial_products": ["transactions"]},
            "INVALID_INSTITUTION",
        ),
        (
            {
                "institution_id": "ins_sandbox_first",
                "initial_products": ["transactions"],
                "options": {"transactions": {"days_requested": 731}},
            },
            "INVALID_FIELD",
        ),
        (
            {"institution_id": "ins_sandbox_first", "initial_products": "transactions"},
            "INVALID_FIELD",
        ),
    ],
)
def test_sandbox_public_token_create_refuses_what_plaid_refuses(client, body, code):
    answer = plaid_post(client, "sandbox/public_token/create", body)
    assert answer.status_code == 400 and answer.json()["error_code"] == code


def test_an_attacker_without_the_client_secret_makes_no_item(client):
    answer = plaid_post(
        client,
        "sandbox/public_token/create",
        {"institution_id": "ins_sandbox_first", "initial_products": ["transactions"]},
        auth=False,
    )
    assert answer.status_code == 400 and answer.json()["error_code"] == "MISSING_FIELDS"
    wrong = client.post(
        "/sandbox/plaid/sandbox/public_token/create",
        {
            **PLAID_CLIENT,
            "secret": "guess",
            "institution_id": "ins_sandbox_first",
            "initial_products": ["transactions"],
        },
        content_type="application/json",
    )
    assert wrong.status_code == 400 and wrong.json()["error_code"] == "INVALID_API_KEYS"


def test_reset_login_makes_the_item_need_a_new_login(client):
    item = plaid_link(client)
    answer = plaid_post(client, "sandbox/item/reset_login", {"access_token": item["access_token"]})
    assert answer.status_code == 200 and answer.json()["reset_login"] is True
    sync = plaid_post(client, "transactions/sync", {"access_token": item["access_token"]})
    assert sync.status_code == 400 and sync.json()["error_code"] == "ITEM_LOGIN_REQUIRED"


def test_fire_webhook_sends_sync_updates_available_only_after_the_first_sync(client, recorder):  # noqa: F811
    item = plaid_link(client, webhook=recorder.url)
    fire = {"access_token": item["access_token"], "webhook_code": "SYNC_UPDATES_AVAILABLE"}
    early = plaid_post(client, "sandbox/item/fire_webhook", fire)
    assert early.status_code == 400 and early.json()["error_type"] == "INVALID_INPUT"
    assert recorder.requests == []
    plaid_post(client, "transactions/sync", {"access_token": item["access_token"]})
    answer = plaid_post(client, "sandbox/item/fire_webhook", fire)
    assert answer.status_code == 200 and answer.json()["webhook_fired"] is True
    [received] = recorder.requests
    body = received.json()
    assert (body["webhook_type"], body["webhook_code"]) == (
        "TRANSACTIONS",
        "SYNC_UPDATES_AVAILABLE",
    )
    assert body["item_id"] == item["item_id"] and body["historical_update_complete"] is True


def test_fire_webhook_error_and_login_repaired_change_the_items_login(client, recorder):  # noqa: F811
    item = plaid_link(client, webhook=recorder.url)
    token = item["access_token"]
    fired = plaid_post(
        client, "sandbox/item/fire_webhook", {"access_token": token, "webhook_code": "ERROR"}
    )
    assert fired.status_code == 200
    assert recorder.requests[-1].json()["error"]["error_code"] == "ITEM_LOGIN_REQUIRED"
    assert plaid_post(client, "accounts/get", {"access_token": token}).status_code == 400
    plaid_post(
        client,
        "sandbox/item/fire_webhook",
        {"access_token": token, "webhook_code": "LOGIN_REPAIRED"},
    )
    assert recorder.requests[-1].json()["webhook_code"] == "LOGIN_REPAIRED"
    assert plaid_post(client, "accounts/get", {"access_token": token}).status_code == 200


def test_fire_webhook_refuses_a_code_of_another_type_or_an_item_without_a_webhook(client):
    item = plaid_link(client)
    token = item["access_token"]
    wrong_type = plaid_post(
        client,
        "sandbox/item/fire_webhook",
        {"access_token": token, "webhook_code": "ERROR", "webhook_type": "TRANSACTIONS"},
    )
    assert wrong_type.status_code == 400
    no_url = plaid_post(
        client, "sandbox/item/fire_webhook", {"access_token": token, "webhook_code": "ERROR"}
    )
    assert no_url.status_code == 400 and no_url.json()["error_code"] == "SANDBOX_WEBHOOK_INVALID"


@pytest.mark.parametrize(
    "path",
    [
        "/sandbox/plaid/link/public_token/create",  # invented once; Plaid has no such call
        "/sandbox/plaid/no/such/endpoint",
        "/sandbox/plaid/",
        "/sandbox/plaid/transactions/get%00",
        "/sandbox/plaid/<script>alert(1)</script>",
        "/sandbox/plaid/../../admin/",
    ],
)
def test_an_unknown_path_answers_plaids_json_error_never_a_page(client, path):
    for answer in (client.post(path, {}, content_type="application/json"), client.get(path)):
        if path.startswith("/sandbox/plaid/../"):
            continue  # normalised away by the client before it reaches the sandbox
        assert answer.status_code == 404
        assert answer["Content-Type"].startswith("application/json")
        body = answer.json()
        assert (body["error_type"], body["error_code"]) == ("INVALID_REQUEST", "NOT_FOUND")
        assert "<" not in answer.content.decode()


def test_a_new_item_announces_its_updates_when_they_are_due(
    client,
    settings,
    monkeypatch,
    recorder,  # noqa: F811
):
    """With updates that take time (as with `make run`), the sandbox sends their webhooks
    then: INITIAL_UPDATE, HISTORICAL_UPDATE, and SYNC_UPDATES_AVAILABLE once synced."""
    from sources.providers.plaid import sandbox

    timers = []

    class Timer:
        def __init__(self, delay, function, args):
            timers.append((delay, function, args))
            self.daemon = False

        def start(self):
            pass

    monkeypatch.setattr(sandbox.threading, "Timer", Timer)
    settings.SIBLING_SANDBOX_RECENT_READY_S = 10
    settings.SIBLING_SANDBOX_HISTORY_READY_S = 30
    item = plaid_link(client, webhook=recorder.url)
    assert [(round(d), a) for d, _, a in timers] == [
        (10, (item["item_id"], False)),
        (40, (item["item_id"], True)),
    ]
    sandbox.update_webhooks(item["item_id"], historical=False)
    assert [r.json()["webhook_code"] for r in recorder.requests] == ["INITIAL_UPDATE"]
    plaid_post(client, "transactions/sync", {"access_token": item["access_token"]})
    sandbox.update_webhooks(item["item_id"], historical=True)
    assert [r.json()["webhook_code"] for r in recorder.requests[1:]] == [
        "HISTORICAL_UPDATE",
        "SYNC_UPDATES_AVAILABLE",
    ]
