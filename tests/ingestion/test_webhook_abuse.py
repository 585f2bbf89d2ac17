"""Webhooks under attack: forged traffic costs one counted row, never a stored event; what is
kept expires; account lookups use an index. Each provider's own defences (key fetch budgets,
deduplication windows) are tested in its folder."""

from __future__ import annotations

import ast
import json
from datetime import timedelta

import pytest
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from ingestion.models import WebhookEvent, WebhookRejection
from ingestion.webhooks import IncomingEvent, webhook_event_store
from sources.models import UserDataSource
from tests.factories import StaffFactory, UserDataSourceFactory, UserFactory
from tests.sources.providers.kit import provider_for, provider_with

pytestmark = pytest.mark.django_db(transaction=True)
Status = WebhookEvent.Status


def _receiver() -> tuple[str, str]:
    """A provider with a webhook receiver, and the receiver's path."""
    provider = provider_with(webhooks=True)
    return provider.id, f"/webhooks/{provider.id}/"


@pytest.fixture
def live(sandbox, settings):
    """Deliveries to this test's live server, whose sandbox serves providers' keys."""
    settings.SIBLING_PUBLIC_URL = sandbox.url
    return sandbox


# --- Rejections are counted, not stored ----------------------------------------------------------


def test_forged_deliveries_are_counted_in_one_bounded_row(client, live, raw_db):
    provider, url = _receiver()
    for n in range(30):
        body = json.dumps({"forged": n, "pad": "x" * n}).encode()
        client.post(url, data=body, content_type="application/json",
                    HTTP_AUTHORIZATION="garbage", HTTP_X_SECRET="s3cret")  # fmt: skip
    assert not WebhookEvent.objects.exists()
    row = WebhookRejection.objects.get()
    assert (row.provider, row.sender, row.count) == (provider, "127.0.0.1", 30)
    assert row.reason and "garbage" not in row.reason
    assert len(row.examples) == 5 and row.examples[-1]["body_length"] == len(
        json.dumps({"forged": 29, "pad": "x" * 29})
    )
    stored = json.dumps(raw_db[WebhookRejection._meta.db_table].find_one(), default=str)
    assert "s3cret" not in stored and "garbage" not in stored and "forged" not in stored
    assert "x-secret" in row.examples[0]["headers"]  # names only
    assert row.expires_at - row.bucket >= timedelta(days=7)


def test_a_rejection_example_keeps_header_names_short(client, live):
    # A sender chooses its header names as freely as its body: each one is kept shortened.
    _, url = _receiver()
    client.post(url, data=b"{}", content_type="application/json",
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
    incoming = IncomingEvent(dedup_key="retention", event_type="UNKNOWN.EVENT", payload={})
    event, _ = webhook_event_store(provider=_receiver()[0], event=incoming)
    event.refresh_from_db()
    assert event.status == Status.PROCESSED
    assert event.expires_at == event.processed_at + timedelta(days=12)


def test_rejection_log_is_read_only_for_view_staff(client):
    WebhookRejection.objects.create(
        provider=_receiver()[0],
        reason="bad signature",
        sender="203.0.113.9",
        bucket=timezone.now().replace(minute=0, second=0, microsecond=0),
        count=3,
        first_at=timezone.now(),
        last_at=timezone.now(),
        examples=[{"at": "now", "body_length": 2, "headers": ["x-signature-header"]}],
        expires_at=timezone.now() + timedelta(days=7),
    )
    url = "/admin/ingestion/webhookrejection/"
    row = WebhookRejection.objects.get()
    client.force_login(StaffFactory(permissions=["ingestion.view_webhookrejection"]))
    listing = client.get(url)
    assert listing.status_code == 200 and "203.0.113.9" in listing.content.decode()
    detail = client.get(f"{url}{row.pk}/change/")
    assert detail.status_code == 200 and "x-signature-header" in detail.content.decode()
    assert 'name="_save"' not in detail.content.decode()
    assert client.get(f"{url}add/").status_code == 403
    assert client.post(f"{url}{row.pk}/delete/", {"post": "yes"}).status_code == 403
    client.force_login(StaffFactory(permissions=[]))
    assert client.get(url).status_code == 403


# --- Connection lookups by provider account -----------------------------------------------------


def test_account_lookups_are_answered_from_an_index(raw_db):
    from django.db import connection

    from ingestion.notifications import connection_for_account

    provider = _receiver()[0]
    found = UserDataSourceFactory(provider=provider, external_account_id="item-ix")
    UserDataSource.objects.filter(pk=found.pk).update(external_lookup="lookup-ix")
    table = raw_db[UserDataSource._meta.db_table]
    for lookup in ({"external_account_id": "item-ix"}, {"external_lookup": "lookup-ix"}):
        with CaptureQueriesContext(connection) as queries:
            assert connection_for_account(provider=provider, **lookup) == found
        (sent,) = [q["sql"] for q in queries.captured_queries]
        # The filter as sent names only an index's fields (anything else is a scan here).
        match = ast.literal_eval(sent.split(".aggregate(", 1)[1][:-1])[0]["$match"]
        assert "$nor" not in sent and "$not" not in sent and "$and" not in match
        plan = table.find(match).explain()
        assert "IXSCAN" in json.dumps(plan["queryPlanner"]["winningPlan"]), (match, plan)


# --- The social-auth routes --------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/connect/disconnect/{id}/", "/connect/disconnect/{id}/1/", "/connect/idp-launch/{id}/"],
)
def test_social_auth_disconnect_routes_are_not_mounted(client, path):
    client.force_login(UserFactory())
    provider = provider_for(auth_mode="oauth2")
    assert client.post(path.format(id=provider.id)).status_code == 404


def test_the_connect_routes_remain(client):
    from django.urls import reverse

    backend = provider_for(auth_mode="oauth2").id
    assert reverse("social:begin", args=[backend]) == f"/connect/login/{backend}/"
    assert reverse("social:complete", args=[backend]) == f"/connect/complete/{backend}/"
