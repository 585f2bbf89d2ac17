import base64
import json

import pytest

from sources.providers.plaid.sandbox.api import LINK_TOKEN_KIND, STORE, webhook_signing_key
from sources.sandbox.faults import FaultError, fault_clear, fault_set, faults_pending
from sources.sandbox.store import record_get

from .conftest import link_imitation, plaid_post

pytestmark = pytest.mark.django_db

TRANSACTION_KEYS = {
    "account_id",
    "amount",
    "iso_currency_code",
    "unofficial_currency_code",
    "date",
    "datetime",
    "authorized_date",
    "authorized_datetime",
    "name",
    "pending",
    "pending_transaction_id",
    "transaction_id",
    "payment_channel",
    "location",
    "payment_meta",
    "account_owner",
    "transaction_code",
}


def sync_all(client, access_token, cursor=None, count=500):
    added, modified, removed, pages = [], [], [], 0
    while True:
        body = {"access_token": access_token, "count": count}
        if cursor:
            body["cursor"] = cursor
        response = plaid_post(client, "transactions/sync", body)
        assert response.status_code == 200, response.content
        page = response.json()
        pages += 1
        added += page["added"]
        modified += page["modified"]
        removed += page["removed"]
        cursor = page["next_cursor"]
        if not page["has_more"]:
            return added, modified, removed, cursor, pages


def test_link_flow_remembers_webhook_and_metadata(client):
    item = link_imitation(client, "ins_sandbox_union", webhook="https://example.com/hooks/plaid")
    assert item["access_token"].startswith("access-sandbox-")
    assert item["metadata"]["institution"] == {
        "name": "Sandbox Credit Union",
        "institution_id": "ins_sandbox_union",
    }
    assert {a["subtype"] for a in item["metadata"]["accounts"]} == {"checking", "credit card"}
    link = record_get(STORE, LINK_TOKEN_KIND, item["link_token"])
    assert link is not None and link.data["webhook"].endswith("/plaid")
    got = plaid_post(client, "item/get", {"access_token": item["access_token"]}).json()
    assert got["item"]["webhook"] == "https://example.com/hooks/plaid"
    assert got["item"]["item_id"] == item["item_id"] and got["item"]["error"] is None


def test_public_token_is_single_use(client):
    link = plaid_post(
        client,
        "link/token/create",
        {
            "client_name": "Sibling",
            "language": "en",
            "country_codes": ["US"],
            "user": {"client_user_id": "p"},
            "products": ["transactions"],
        },
    ).json()
    assert link["link_token"].startswith("link-sandbox-") and link["expiration"]
    public = plaid_post(
        client,
        "_link/public_token/create",
        {"link_token": link["link_token"], "institution_id": "ins_sandbox_first"},
        auth=False,
    ).json()["public_token"]
    assert public.startswith("public-sandbox-")
    first = plaid_post(client, "item/public_token/exchange", {"public_token": public})
    assert first.status_code == 200
    again = plaid_post(client, "item/public_token/exchange", {"public_token": public})
    assert again.status_code == 400
    assert again.json()["error_code"] == "INVALID_PUBLIC_TOKEN"


def test_request_errors(client):
    missing = plaid_post(client, "link/token/create", {"client_name": "Sibling"})
    assert missing.status_code == 400
    body = missing.json()
    assert body["error_type"] == "INVALID_REQUEST" and body["error_code"] == "MISSING_FIELDS"
    assert set(body) >= {
        "error_type",
        "error_code",
        "error_message",
        "display_message",
        "request_id",
    }
    wrong = client.post(
        "/sandbox/plaid/item/get",
        {"client_id": "sandbox-plaid-client", "secret": "nope", "access_token": "access-x"},
        content_type="application/json",
    )
    assert wrong.json()["error_code"] == "INVALID_API_KEYS"
    not_json = client.post("/sandbox/plaid/item/get", "{", content_type="application/json")
    assert not_json.status_code == 400 and not_json.json()["error_code"] == "INVALID_BODY"
    header_auth = client.post(
        "/sandbox/plaid/item/get",
        {"access_token": "access-sandbox-unknown"},
        content_type="application/json",
        HTTP_PLAID_CLIENT_ID="sandbox-plaid-client",
        HTTP_PLAID_SECRET="sandbox-plaid-secret",
    )
    assert header_auth.json()["error_code"] == "INVALID_ACCESS_TOKEN"


def test_accounts_and_item_remove(client, plaid_item):
    token = plaid_item["access_token"]
    accounts = plaid_post(client, "accounts/get", {"access_token": token}).json()
    assert len(accounts["accounts"]) == 3
    assert set(accounts["accounts"][0]["balances"]) >= {
        "available",
        "current",
        "limit",
        "iso_currency_code",
        "unofficial_currency_code",
    }
    assert plaid_post(client, "item/remove", {"access_token": token}).status_code == 200
    after = plaid_post(client, "accounts/get", {"access_token": token})
    assert after.status_code == 400
    assert (after.json()["error_type"], after.json()["error_code"]) == (
        "INVALID_INPUT",
        "INVALID_ACCESS_TOKEN",
    )


def test_sync_paginates_six_months_deterministically(client, plaid_item):
    token = plaid_item["access_token"]
    added, modified, removed, cursor, pages = sync_all(client, token, count=100)
    assert pages > 2 and not modified and not removed
    assert len({t["transaction_id"] for t in added}) == len(added)
    dates = sorted(t["date"] for t in added)
    from datetime import date

    span = (date.fromisoformat(dates[-1]) - date.fromisoformat(dates[0])).days
    assert span >= 170  # about six months, whatever the first days drew
    assert TRANSACTION_KEYS <= set(added[0])
    assert base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))  # opaque base64
    # Same item, same history: a second full sync from scratch gives the same transactions.
    again = sync_all(client, token)[0]
    assert [t["transaction_id"] for t in again] == [t["transaction_id"] for t in added]
    # Nothing new since the last cursor.
    quiet = plaid_post(
        client, "transactions/sync", {"access_token": token, "cursor": cursor}
    ).json()
    assert (quiet["added"], quiet["modified"], quiet["removed"], quiet["has_more"]) == (
        [],
        [],
        [],
        False,
    )
    assert quiet["transactions_update_status"] == "HISTORICAL_UPDATE_COMPLETE"
    assert quiet["accounts"]


def test_new_activity_adds_modifies_and_removes(client, plaid_item):
    token = plaid_item["access_token"]
    added, _, _, cursor, _ = sync_all(client, token)
    known = {t["transaction_id"]: t for t in added}
    fault_set("plaid", plaid_item["item_id"], "new_activity")
    new, modified, removed, cursor, _ = sync_all(client, token, cursor)
    assert len(new) >= 3 and len(modified) == 2 and removed
    assert all(t["transaction_id"] in known for t in modified)
    assert all(set(r) == {"transaction_id", "account_id"} for r in removed)
    assert all(r["transaction_id"] in known for r in removed)
    posted = [t for t in new if t["pending_transaction_id"]]
    assert {t["pending_transaction_id"] for t in posted} <= {r["transaction_id"] for r in removed}


def test_mutation_fault_mid_pagination_then_restart(client, plaid_item):
    token = plaid_item["access_token"]
    fault_set("plaid", plaid_item["item_id"], "plaid_mutation")
    first = plaid_post(client, "transactions/sync", {"access_token": token, "count": 50}).json()
    assert first["has_more"]
    failed = plaid_post(
        client,
        "transactions/sync",
        {"access_token": token, "count": 50, "cursor": first["next_cursor"]},
    )
    assert failed.status_code == 400
    assert failed.json()["error_code"] == "TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION"
    assert failed.json()["error_type"] == "TRANSACTIONS_ERROR"
    added = sync_all(client, token, count=50)[0]  # restart from the first cursor
    assert len(added) > 50


def test_item_faults(client, plaid_item):
    token, item_id = plaid_item["access_token"], plaid_item["item_id"]
    fault_set("plaid", item_id, "rate_limit")
    limited = plaid_post(client, "transactions/sync", {"access_token": token})
    assert limited.status_code == 429
    assert limited.json()["error_type"] == "RATE_LIMIT_EXCEEDED"
    fault_set("plaid", item_id, "server_error")
    failed = plaid_post(client, "accounts/get", {"access_token": token})
    assert failed.status_code == 500 and failed.json()["error_type"] == "API_ERROR"

    fault_set("plaid", item_id, "malformed")
    page = plaid_post(client, "transactions/sync", {"access_token": token, "count": 5}).json()
    assert "amount" not in page["added"][0]
    assert (
        "amount"
        in plaid_post(client, "transactions/sync", {"access_token": token, "count": 5}).json()[
            "added"
        ][0]
    )

    fault_set("plaid", item_id, "revoke")
    login = plaid_post(client, "transactions/sync", {"access_token": token})
    assert login.status_code == 400
    assert (login.json()["error_type"], login.json()["error_code"]) == (
        "ITEM_ERROR",
        "ITEM_LOGIN_REQUIRED",
    )
    assert (
        plaid_post(client, "item/get", {"access_token": token}).json()["item"]["error"][
            "error_code"
        ]
        == "ITEM_LOGIN_REQUIRED"
    )
    # Update mode repairs it.
    link = plaid_post(
        client,
        "link/token/create",
        {
            "client_name": "Sibling",
            "language": "en",
            "country_codes": ["US"],
            "user": {"client_user_id": "p"},
            "access_token": token,
        },
    ).json()
    plaid_post(client, "_link/public_token/create", {"link_token": link["link_token"]}, auth=False)
    assert plaid_post(client, "accounts/get", {"access_token": token}).status_code == 200
    fault_set("plaid", item_id, "revoke")
    fault_clear("plaid", item_id)
    assert plaid_post(client, "accounts/get", {"access_token": token}).status_code == 200


def test_webhook_verification_key(client):
    kid, private = webhook_signing_key()
    body = plaid_post(client, "webhook_verification_key/get", {"key_id": kid}).json()
    key = body["key"]
    assert (key["alg"], key["crv"], key["kty"], key["use"], key["kid"]) == (
        "ES256",
        "P-256",
        "EC",
        "sig",
        kid,
    )
    assert key["expired_at"] is None and isinstance(key["created_at"], int)
    x = int.from_bytes(base64.urlsafe_b64decode(key["x"] + "=="), "big")
    assert x == private.public_key().public_numbers().x
    assert webhook_signing_key()[0] == kid  # generated once
    unknown = plaid_post(client, "webhook_verification_key/get", {"key_id": "nope"})
    assert unknown.status_code == 400


def test_link_script_and_faults_endpoint(client, plaid_item):
    script = client.get("/sandbox/plaid/link-initialize.js")
    assert script.status_code == 200
    assert script["Content-Type"].startswith("application/javascript")
    text = script.content.decode()
    assert "window.Plaid" in text and 'role: "dialog"' in text and "Sandbox" in text
    assert "First Sandbox Bank" in text and "/sandbox/plaid/_link/public_token/create" in text
    assert "http" not in text.split("CONFIG =")[0].replace("https://", "")  # nothing external
    response = client.post(
        "/sandbox/_faults",
        json.dumps(
            {
                "provider": "plaid",
                "account": plaid_item["item_id"],
                "fault": "server_error",
                "count": 1,
            }
        ),
        content_type="application/json",
    )
    assert response.status_code == 200
    listed = client.get("/sandbox/_faults").json()["faults"]
    assert listed == [
        {
            "provider": "plaid",
            "account": plaid_item["item_id"],
            "fault": "server_error",
            "remaining": 1,
        }
    ]
    failed = plaid_post(client, "item/get", {"access_token": plaid_item["access_token"]})
    assert failed.status_code == 500
    assert client.get("/sandbox/_faults").json()["faults"] == []
    bad = client.post(
        "/sandbox/_faults",
        json.dumps({"provider": "plaid", "account": "x", "fault": "expire_access_token"}),
        content_type="application/json",
    )
    assert bad.status_code == 400


def test_counted_faults_clear_and_the_mutation_fault_is_plaids_own():
    fault_set("plaid", "item-1", "server_error", count=5)
    fault_set("plaid", "item-1", "malformed")
    fault_clear("plaid", "item-1", "server_error")
    assert faults_pending("plaid", "item-1") == {"malformed"}
    fault_clear("plaid", "item-1")
    assert faults_pending("plaid", "item-1") == set()
    fault_set("plaid", "item-1", "plaid_mutation")
    assert faults_pending("plaid", "item-1") == {"plaid_mutation"}
    with pytest.raises(FaultError):
        fault_set("plaid", "item-1", "expire_access_token")


def test_bad_input_is_a_plaid_error_never_a_500(client, plaid_item):
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
    assert plaid_post(client, "_link/public_token/create", {}, auth=False).status_code == 400


def test_a_removed_item_is_gone_for_its_client_and_its_public_token(client, plaid_item):
    """Removal is kept in the item's stored state: every later call refuses its token."""
    token = plaid_item["access_token"]
    assert plaid_post(client, "item/remove", {"access_token": token}).status_code == 200
    for path in ("item/get", "item/remove", "transactions/sync"):
        answer = plaid_post(client, path, {"access_token": token})
        assert answer.json()["error_code"] == "INVALID_ACCESS_TOKEN", path
