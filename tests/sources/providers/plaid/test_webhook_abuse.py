"""Plaid webhooks under attack: forged tokens with unknown kids cost a bounded number of key
fetches, keys are re-checked, a re-encoded signature is a redelivery, every Plaid call has a
timeout; events reach an Item's current connection only."""

from __future__ import annotations

import base64
import json
import time
import uuid

import jwt
import pytest
import urllib3
from cryptography.hazmat.primitives.asymmetric import ec
from django.core.cache import cache
from django.core.signals import request_started

from ingestion.models import WebhookEvent
from ingestion.webhooks import IncomingEvent, webhook_event_store
from sources.models import UserDataSource
from sources.providers.plaid import webhooks as plaid_hooks
from sources.providers.plaid.sandbox import webhooks as plaid_sandbox_hooks
from tests.factories import UserDataSourceFactory, UserFactory
from tests.sources.providers.plaid.test_webhooks import PLAID_URL, plaid_post

pytestmark = pytest.mark.django_db(transaction=True)
Status = WebhookEvent.Status
KEY_PATH = "/webhook_verification_key/get"
# The order of the P-256 group: (r, n - s) is the other valid encoding of a signature (r, s).
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


@pytest.fixture
def live(sandbox, settings):
    """Deliveries to this test's live server, whose sandbox serves Plaid's keys."""
    settings.SIBLING_PUBLIC_URL = sandbox.url
    return sandbox


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


def test_every_plaid_call_has_a_timeout(live, monkeypatch, connection):
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
    connection_sync(connection.pk, policy=NO_WAIT)
    plaid_hooks.verification_key("any-kid")
    assert len(timeouts) >= 3
    assert all(isinstance(t, urllib3.Timeout) and t.read_timeout for t in timeouts), timeouts


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
