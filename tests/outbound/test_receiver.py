"""The sandbox receiver's own surface: bad input to its control API and views gets a 4xx, never
a 500; an endpoint switched down and up over HTTP; what it received, listed."""

from __future__ import annotations

import json

import pytest

from outbound.emit import event_emit
from outbound.models import CONNECTION_CREATED
from tests.outbound.conftest import send

pytestmark = pytest.mark.django_db

CONTROL = "/sandbox/_receiver"


def _control(client, body):
    data = body if isinstance(body, str) else json.dumps(body)
    return client.post(CONTROL, data=data, content_type="application/json")


def test_bad_input_to_the_receiver_is_a_4xx(client, receiver):
    assert _control(client, "not json").status_code == 400
    assert _control(client, {"endpoint": "tests"}).status_code == 400
    assert _control(client, {"endpoint": 3, "down": True}).status_code == 400
    assert _control(client, {"endpoint": "nobody", "down": True}).status_code == 404
    assert _control(client, {"endpoint": "tests", "down": True, "status": 200}).status_code == 400
    assert _control(client, {"endpoint": "tests", "down": True, "status": "x"}).status_code == 400
    assert client.get(CONTROL).status_code == 405
    assert (
        client.post(
            "/sandbox/_receiver/nobody/", data=b"{}", content_type="application/json"
        ).status_code
        == 404
    )
    assert (
        client.put(
            "/sandbox/_receiver/tests/", data=b"{}", content_type="application/json"
        ).status_code
        == 405
    )
    unsigned = client.post("/sandbox/_receiver/tests/", data=b"\xff\xfe", content_type="x/y")
    assert unsigned.status_code == 401


def test_switched_down_and_up_over_http_and_listed(client, receiver):
    assert _control(client, {"endpoint": "tests", "down": True}).status_code == 200
    event_id = event_emit(event_type=CONNECTION_CREATED, data={}, person="p")
    send()
    assert _control(client, {"endpoint": "tests", "down": False}).status_code == 200
    from django.utils import timezone

    from outbound.models import Delivery

    Delivery.objects.update(next_attempt_at=timezone.now())
    send()
    listing = client.get("/sandbox/_receiver/tests/").json()
    assert [(row["webhook_id"], row["answered"], row["verified"]) for row in listing] == [
        (event_id, 503, False),
        (event_id, 200, True),
    ]


def test_make_run_s_subscriber_points_at_the_receiver_with_the_same_secret(sandbox, settings):
    from outbound.models import EVENT_TYPES, Subscriber
    from sources.sandbox import store
    from sources.sandbox.receiver import DEV_ENDPOINT, ENDPOINT, STORE, dev_subscriber_ensure

    base = f"{sandbox.url}/sandbox"
    assert "/_receiver/dev/" in dev_subscriber_ensure(base)
    dev_subscriber_ensure(base)  # again: nothing new
    [subscriber] = Subscriber.objects.all()
    assert subscriber.url == f"{base}/_receiver/dev/"
    assert sorted(subscriber.event_types) == sorted(EVENT_TYPES)
    assert store.record_get(STORE, ENDPOINT, DEV_ENDPOINT).data["secret"] == subscriber.secret
    event_emit(event_type=CONNECTION_CREATED, data={}, person="p")
    send()
    from sources.sandbox.models import ReceivedNotification

    assert ReceivedNotification.objects.get(endpoint=DEV_ENDPOINT).verified

    settings.SIBLING_SANDBOX_ALLOWED = False
    Subscriber.objects.all().delete()
    assert "off" in dev_subscriber_ensure(base)
    assert not Subscriber.objects.exists()


def test_the_duplicate_lookup_names_only_its_index_fields(client, receiver):
    from datetime import UTC, datetime

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from outbound.signing import event_body, headers_sign

    body = event_body(event_type=CONNECTION_CREATED, created_at=datetime.now(UTC), data={})
    headers = headers_sign(
        secret=receiver.secret, event_id="msg_once", body=body, at=datetime.now(UTC)
    )
    extra = {f"HTTP_{name.upper().replace('-', '_')}": value for name, value in headers.items()}
    answers = []
    with CaptureQueriesContext(connection) as queries:
        for _ in range(2):
            answers.append(
                client.post(
                    "/sandbox/_receiver/tests/",
                    data=body,
                    content_type="application/json",
                    **extra,
                ).json()["duplicate"]
            )
    assert answers == [False, True]
    matches = [
        q["sql"].split("'$match': ", 1)[1].split("}}", 1)[0]
        for q in queries.captured_queries
        if "receivednotification" in q["sql"] and "'$match'" in q["sql"]
    ]
    # (endpoint, webhook_id) is the index; a third field would scan on the embedded server.
    assert matches and all("'webhook_id'" in m and "verified" not in m for m in matches), matches
