"""Webhooks under attack: forged traffic costs little (bounded outbound calls, one counted row),
genuine traffic is never dropped (identical Google Health notifications after the window,
reconnected accounts), and what is kept expires."""

from __future__ import annotations

import ast
import base64
import json
import time
import uuid
from datetime import timedelta

import jwt
import pytest
import urllib3
from cryptography.hazmat.primitives.asymmetric import ec
from django.core.cache import cache
from django.core.signals import request_started
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from ingestion.models import WebhookEvent, WebhookRejection
from ingestion.webhooks import IncomingEvent, webhook_event_store
from sources.models import UserDataSource
from sources.providers.fitbit import sandbox as fitbit_hooks
from sources.providers.plaid import webhooks as plaid_hooks
from sources.providers.plaid.sandbox import webhooks as plaid_sandbox_hooks
from tests.factories import StaffFactory, UserDataSourceFactory, UserFactory
from tests.ingestion.test_webhooks import HEALTH_URL, PLAID_URL, plaid_post

pytestmark = pytest.mark.django_db(transaction=True)
Status = WebhookEvent.Status
KEY_PATH = "/webhook_verification_key/get"
# The order of the P-256 group: (r, n - s) is the other valid encoding of a signature (r, s).
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


@pytest.fixture(autouse=True)
def fresh_plaid_state(monkeypatch):
    """No kid, budget or spent flag carried over from another test (process or shared cache)."""
    plaid_hooks._keys.clear()
    plaid_hooks._unknown.clear()
    monkeypatch.setattr(plaid_hooks, "_budget_spent_until", 0.0)
    cache.clear()
    yield
    plaid_hooks._keys.clear()
    plaid_hooks._unknown.clear()
    cache.clear()


@pytest.fixture
def live(sandbox, settings):
    """Deliveries to this test's live server, whose sandbox serves Plaid's keys."""
    settings.SIBLING_PUBLIC_URL = sandbox.url
    return sandbox


@pytest.fixture
def key_fetches():
    """The calls Sibling makes to the sandbox's /webhook_verification_key/get (it runs in this
    process, so every request it serves is seen here)."""
    seen: list[str] = []

    def record(sender, environ, **kwargs):
        if environ.get("PATH_INFO", "").endswith(KEY_PATH):
            seen.append(environ["PATH_INFO"])

    request_started.connect(record, weak=False)
    yield seen
    request_started.disconnect(record)


def _unknown_item_body() -> bytes:
    body = plaid_sandbox_hooks.plaid_webhook_body(
        f"item-{uuid.uuid4().hex[:8]}", "TRANSACTIONS", "SYNC_UPDATES_AVAILABLE"
    )
    return json.dumps(body).encode()


def _forged(client, kid: str, raw: bytes | None = None):
    key = ec.generate_private_key(ec.SECP256R1())
    return plaid_post(client, raw or _unknown_item_body(), kid=kid, key=key)


# --- Plaid: what a forged token can make Sibling do ---------------------------------------------


def test_forged_tokens_with_unknown_kids_cause_at_most_the_budget_of_key_fetches(
    client, live, settings, monkeypatch, key_fetches
):
    settings.PLAID_WEBHOOK_KEY_FETCHES_PER_MIN = 3
    monkeypatch.setattr(plaid_hooks, "_minute", lambda: 1)  # one budget window, whatever the time
    statuses = [_forged(client, f"forged-{n}").status_code for n in range(20)]
    assert len(key_fetches) == 3
    assert statuses[:3] == [401] * 3 and set(statuses[3:]) == {503}  # Plaid would retry a 503
    assert not WebhookEvent.objects.exists()


def test_an_unknown_kid_is_remembered_by_every_process(client, live, key_fetches):
    for _ in range(10):
        assert _forged(client, "forged-again").status_code == 401
    assert len(key_fetches) == 1
    plaid_hooks._unknown.clear()  # another process: only the shared cache knows
    assert _forged(client, "forged-again").status_code == 401
    assert len(key_fetches) == 1


def test_a_genuine_delivery_after_a_flood_is_verified(client, live, key_fetches):
    for n in range(5):
        _forged(client, f"flood-{n}")
    assert plaid_post(client, _unknown_item_body()).status_code == 200
    assert WebhookEvent.objects.filter(provider="plaid", status=Status.PROCESSED).count() == 1


def test_an_iat_in_the_future_is_refused(client, live):
    future = plaid_post(client, _unknown_item_body(), iat=int(time.time()) + 3600)
    assert future.status_code == 401 and "future" in future.json()["error"]
    skewed = plaid_post(client, _unknown_item_body(), iat=int(time.time()) + 30)
    assert skewed.status_code == 200  # a small clock difference is not an attack


def test_a_cached_key_that_expired_since_is_refused(client, live):
    from sources.providers.plaid.sandbox.api import webhook_signing_key

    old_kid, old_key = webhook_signing_key()
    assert plaid_post(client, _unknown_item_body()).status_code == 200
    plaid_sandbox_hooks.plaid_signing_key_rotate()  # Plaid expires the key Sibling has cached
    cached, _fetched = plaid_hooks._keys[old_kid]
    plaid_hooks._keys[old_kid] = (cached, time.monotonic() - 2 * 3600)  # two hours later
    late = plaid_post(client, _unknown_item_body(), kid=old_kid, key=old_key)
    assert late.status_code == 401 and late.json()["error"] == "expired signing key"


def test_a_cached_key_due_for_a_re_check_serves_while_plaid_cannot_answer(
    client, live, settings, monkeypatch
):
    from sources.providers.plaid.sandbox.api import webhook_signing_key

    settings.PLAID_WEBHOOK_KEY_FETCHES_PER_MIN = 2
    monkeypatch.setattr(plaid_hooks, "_minute", lambda: 3)  # one budget window, whatever the time
    kid, _key = webhook_signing_key()
    assert plaid_post(client, _unknown_item_body()).status_code == 200  # one fetch
    cached, _fetched = plaid_hooks._keys[kid]
    plaid_hooks._keys[kid] = (cached, time.monotonic() - 2 * 3600)  # due for a re-check
    settings.SIBLING_SANDBOX_BASE_URL = "http://127.0.0.1:1/sandbox"  # Plaid cannot be reached
    # Genuine deliveries go on being verified with the key as last fetched, whether the fetch
    # fails or the budget is spent; the re-check happens once Plaid answers again.
    for _ in range(3):
        assert plaid_post(client, _unknown_item_body()).status_code == 200
    assert plaid_hooks._keys[kid][1] < time.monotonic() - 3600


def test_a_re_encoded_signature_is_a_redelivery(client, live):
    raw = _unknown_item_body()
    token = plaid_sandbox_hooks.plaid_verification_header(raw)
    head, claims, signature = token.split(".")
    raw_signature = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    r, s = raw_signature[:32], int.from_bytes(raw_signature[32:], "big")
    other = r + (P256_N - s).to_bytes(32, "big")
    twin = f"{head}.{claims}.{base64.urlsafe_b64encode(other).decode().rstrip('=')}"
    assert twin != token
    from sources.providers.plaid.sandbox.api import webhook_signing_key

    public = webhook_signing_key()[1].public_key()
    assert jwt.decode(twin, key=public, algorithms=["ES256"]) == jwt.decode(
        token, key=public, algorithms=["ES256"]
    )  # the twin is a valid signature of the same claims
    for header in (token, twin):
        response = client.post(
            PLAID_URL, data=raw, content_type="application/json", HTTP_PLAID_VERIFICATION=header
        )
        assert response.status_code == 200
    event = WebhookEvent.objects.get(provider="plaid")
    assert event.deliveries == 2 and event.attempts == 1


def test_every_plaid_call_has_a_timeout(live, monkeypatch, plaid_connection):
    from ingestion.runner import connection_sync
    from tests.ingestion.conftest import NO_WAIT

    timeouts: list[object] = []
    original = urllib3.PoolManager.request

    def spy(self, method, url, *args, **kwargs):
        timeouts.append(kwargs.get("timeout"))
        return original(self, method, url, *args, **kwargs)

    monkeypatch.setattr(urllib3.PoolManager, "request", spy)
    from sources.providers.plaid import Plaid

    Plaid.link_token_create(client_user_id="someone")
    connection_sync(plaid_connection.pk, policy=NO_WAIT)
    plaid_hooks.verification_key("any-kid")
    assert len(timeouts) >= 3
    assert all(isinstance(t, urllib3.Timeout) and t.read_timeout for t in timeouts), timeouts


# --- Rejections are counted, not stored ----------------------------------------------------------


def test_forged_deliveries_are_counted_in_one_bounded_row(client, live, raw_db):
    for n in range(30):
        body = json.dumps({"forged": n, "pad": "x" * n}).encode()
        client.post(PLAID_URL, data=body, content_type="application/json",
                    HTTP_PLAID_VERIFICATION="garbage", HTTP_X_SECRET="s3cret")  # fmt: skip
    assert not WebhookEvent.objects.exists()
    row = WebhookRejection.objects.get()
    assert (row.provider, row.reason, row.sender, row.count) == (
        "plaid",
        "malformed Plaid-Verification header",
        "127.0.0.1",
        30,
    )
    assert len(row.examples) == 5 and row.examples[-1]["body_length"] == len(
        json.dumps({"forged": 29, "pad": "x" * 29})
    )
    stored = json.dumps(raw_db[WebhookRejection._meta.db_table].find_one(), default=str)
    assert "s3cret" not in stored and "garbage" not in stored and "forged" not in stored
    assert "x-secret" in row.examples[0]["headers"]  # names only
    assert row.expires_at - row.bucket >= timedelta(days=7)


def test_a_rejection_example_keeps_header_names_short(client, live):
    # A sender chooses its header names as freely as its body: each one is kept shortened.
    client.post(PLAID_URL, data=b"{}", content_type="application/json",
                **{f"HTTP_X_{'A' * 4000}": "1"})  # fmt: skip
    (example,) = WebhookRejection.objects.get().examples
    assert max(len(name) for name in example["headers"]) <= 64
    assert f"x-{'a' * 62}" in example["headers"]


def test_rejection_log_and_event_ttl_indexes(raw_db):
    for model in (WebhookRejection, WebhookEvent):
        indexes = raw_db[model._meta.db_table].index_information()
        ttl = [i for i in indexes.values() if "expireAfterSeconds" in i]
        assert [(i["key"], i["expireAfterSeconds"]) for i in ttl] == [([("expires_at", 1)], 0)]


def test_ipv6_senders_are_counted_per_64(rf):
    from ingestion.webhooks import sender_address

    one = rf.post("/", REMOTE_ADDR="2001:db8:1:2:aaaa::1")
    two = rf.post("/", REMOTE_ADDR="2001:db8:1:2:bbbb::9")
    assert sender_address(one) == sender_address(two) == "2001:db8:1:2::/64"


def test_behind_a_proxy_the_sender_is_the_address_the_proxy_saw(rf, settings):
    from ingestion.webhooks import sender_address

    settings.SIBLING_PROXY_COUNT = 1
    forged = "198.51.100.7, 203.0.113.9"  # the client wrote the first entry itself
    request = rf.post("/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR=forged)
    assert sender_address(request) == "203.0.113.9"


def test_processed_events_expire_after_the_retention(settings):
    settings.SIBLING_WEBHOOK_RETENTION_DAYS = 12
    incoming = IncomingEvent(
        dedup_key="retention", event_type="ITEM.ERROR", payload={"item_id": "nobody"}
    )
    event, _ = webhook_event_store(provider="plaid", event=incoming)
    event.refresh_from_db()
    assert event.status == Status.PROCESSED
    assert event.expires_at == event.processed_at + timedelta(days=12)


def test_rejection_log_is_read_only_for_view_staff(client):
    WebhookRejection.objects.create(
        provider="plaid",
        reason="bad signature",
        sender="203.0.113.9",
        bucket=timezone.now().replace(minute=0, second=0, microsecond=0),
        count=3,
        first_at=timezone.now(),
        last_at=timezone.now(),
        examples=[{"at": "now", "body_length": 2, "headers": ["plaid-verification"]}],
        expires_at=timezone.now() + timedelta(days=7),
    )
    url = "/admin/ingestion/webhookrejection/"
    row = WebhookRejection.objects.get()
    client.force_login(StaffFactory(permissions=["ingestion.view_webhookrejection"]))
    listing = client.get(url)
    assert listing.status_code == 200 and "203.0.113.9" in listing.content.decode()
    detail = client.get(f"{url}{row.pk}/change/")
    assert detail.status_code == 200 and "plaid-verification" in detail.content.decode()
    assert 'name="_save"' not in detail.content.decode()
    assert client.get(f"{url}add/").status_code == 403
    assert client.post(f"{url}{row.pk}/delete/", {"post": "yes"}).status_code == 403
    client.force_login(StaffFactory(permissions=[]))
    assert client.get(url).status_code == 403


# --- Google Health: identical notifications, a window apart ------------------------------------


def _health_post(client, settings, body: dict):
    return client.post(
        HEALTH_URL,
        data=json.dumps(body).encode(),
        content_type="application/json",
        HTTP_AUTHORIZATION=settings.FITBIT_WEBHOOK_SECRET,
    )


def test_identical_health_notifications_are_one_within_the_window_and_new_after(client, settings):
    settings.FITBIT_WEBHOOK_PUBLIC_KEY = ""
    settings.FITBIT_WEBHOOK_DEDUP_WINDOW_S = 600
    day = timezone.now().date().isoformat()
    body = fitbit_hooks.health_notification_body("health-nobody", "steps", [(day, day)])
    assert _health_post(client, settings, body).status_code == 204
    assert _health_post(client, settings, body).status_code == 204  # a redelivery
    first = WebhookEvent.objects.get(provider="fitbit")
    assert first.deliveries == 2

    # Eleven minutes later the same "steps changed today" is news again.
    WebhookEvent.objects.filter(pk=first.pk).update(
        received_at=timezone.now() - timedelta(minutes=11)
    )
    assert _health_post(client, settings, body).status_code == 204
    events = WebhookEvent.objects.filter(provider="fitbit").order_by("received_at")
    assert events.count() == 2
    assert [e.deliveries for e in events] == [2, 1]
    assert all(e.status == Status.PROCESSED for e in events)
    assert _health_post(client, settings, body).status_code == 204  # and its redelivery
    assert WebhookEvent.objects.filter(provider="fitbit").count() == 2


# --- Connection lookups by provider account -----------------------------------------------------


def test_a_reconnected_account_sends_events_to_its_current_connection_only():
    old = UserDataSourceFactory(
        provider="plaid",
        external_account_id="item-shared",
        status=UserDataSource.Status.DISCONNECTED,
    )
    incoming = IncomingEvent(
        dedup_key="to-nobody",
        event_type="ITEM.PENDING_EXPIRATION",
        payload={"item_id": "item-shared"},
    )
    event, _ = webhook_event_store(provider="plaid", event=incoming)
    event.refresh_from_db()
    assert event.connection_id is None and event.error == "no connection for this account"

    current = UserDataSourceFactory(
        user=UserFactory(), provider="plaid", external_account_id="item-shared"
    )
    incoming.dedup_key = "to-current"
    event, _ = webhook_event_store(provider="plaid", event=incoming)
    event.refresh_from_db()
    assert event.connection_id == current.pk and event.user_id == current.user_id
    assert UserDataSource.objects.get(pk=old.pk).notice == ""

    UserDataSourceFactory(
        provider="fitbit", external_account_id="hu-1", status=UserDataSource.Status.DISCONNECTED
    )
    incoming = IncomingEvent(
        dedup_key="health-to-nobody", event_type="x", payload={"healthUserId": "hu-1"}
    )
    event, _ = webhook_event_store(provider="fitbit", event=incoming)
    event.refresh_from_db()
    assert event.connection_id is None and event.error == "no connection for this account"


def test_account_lookups_are_answered_from_an_index(raw_db):
    from django.db import connection

    from ingestion.notifications import connection_for_account

    found = UserDataSourceFactory(provider="plaid", external_account_id="item-ix")
    UserDataSource.objects.filter(pk=found.pk).update(external_lookup="lookup-ix")
    table = raw_db[UserDataSource._meta.db_table]
    for lookup in ({"external_account_id": "item-ix"}, {"external_lookup": "lookup-ix"}):
        with CaptureQueriesContext(connection) as queries:
            assert connection_for_account(provider="plaid", **lookup) == found
        (sent,) = [q["sql"] for q in queries.captured_queries]
        # The filter as sent names only an index's fields (anything else is a scan here).
        match = ast.literal_eval(sent.split(".aggregate(", 1)[1][:-1])[0]["$match"]
        assert "$nor" not in sent and "$not" not in sent and "$and" not in match
        plan = table.find(match).explain()
        assert "IXSCAN" in json.dumps(plan["queryPlanner"]["winningPlan"]), (match, plan)


# --- The social-auth routes --------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/connect/disconnect/gmail/", "/connect/disconnect/fitbit/1/", "/connect/idp-launch/gmail/"],
)
def test_social_auth_disconnect_routes_are_not_mounted(client, path):
    client.force_login(UserFactory())
    assert client.post(path).status_code == 404


def test_the_connect_routes_remain(client):
    from django.urls import reverse

    assert reverse("social:begin", args=["gmail"]) == "/connect/login/gmail/"
    assert reverse("social:complete", args=["gmail"]) == "/connect/complete/gmail/"


def test_a_burst_signed_with_a_new_key_spends_one_fetch(live, settings, monkeypatch, key_fetches):
    from concurrent.futures import ThreadPoolExecutor

    import requests

    settings.PLAID_WEBHOOK_KEY_FETCHES_PER_MIN = 1
    monkeypatch.setattr(plaid_hooks, "_minute", lambda: 2)
    bodies = [_unknown_item_body() for _ in range(8)]

    def deliver(raw: bytes) -> int:
        header = plaid_sandbox_hooks.plaid_verification_header(raw)
        return requests.post(
            f"{live.url}{PLAID_URL}",
            data=raw,
            headers={"Content-Type": "application/json", "Plaid-Verification": header},
            timeout=30,
        ).status_code

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(deliver, bodies)) == [200] * 8
    assert len(key_fetches) == 1
