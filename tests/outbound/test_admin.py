"""Staff and change notifications: a subscriber's secret shown once and stored encrypted, the
deliveries list, Replay (a superuser replays; view-only staff are offered nothing and change
nothing), pause and resume, and a subscriber that keeps failing paused with the reason."""

from __future__ import annotations

import bson
import pytest
from django.urls import reverse
from django.utils import timezone

from outbound.delivery import subscriber_pause
from outbound.emit import event_emit
from outbound.models import CONNECTION_CREATED, RECORDS_CHANGED, Delivery, Subscriber
from tests.factories import StaffFactory, UserFactory
from tests.outbound.conftest import send

pytestmark = pytest.mark.django_db

State = Delivery.State
CHANGELIST = "admin:outbound_delivery_changelist"
VIEW_ONLY = ("outbound.view_delivery", "outbound.view_subscriber")


def _superuser():
    return UserFactory(is_staff=True, is_superuser=True)


def _exhausted(receiver) -> Delivery:
    receiver.down()
    event_id = event_emit(event_type=CONNECTION_CREATED, data={"connection": "1"}, person="p")
    Delivery.objects.filter(event_id=event_id).update(retry_until=timezone.now())
    send()
    delivery = Delivery.objects.get(event_id=event_id)
    assert delivery.state == State.EXHAUSTED
    receiver.down(False)
    return delivery


def _replay(client, delivery):
    return client.post(
        reverse(CHANGELIST),
        {"action": "replay", "_selected_action": [str(delivery.pk)]},
        follow=True,
    )


def test_a_superuser_replays_an_exhausted_delivery_and_the_receiver_gets_it(client, receiver):
    delivery = _exhausted(receiver)
    client.force_login(_superuser())
    listing = client.get(reverse(CHANGELIST), {"state__exact": "exhausted"})
    assert listing.status_code == 200 and delivery.event_id in listing.text
    assert "Replay" in listing.text

    detail = client.get(reverse("admin:outbound_delivery_change", args=[delivery.pk]))
    assert detail.status_code == 200 and "HTTP 503" in detail.text
    answer = _replay(client, delivery)
    assert answer.status_code == 200 and "1 deliveries queued again" in answer.text
    delivery.refresh_from_db()
    assert delivery.state == State.PENDING and delivery.replays == 1
    assert delivery.retry_until > timezone.now()
    send()
    delivery.refresh_from_db()
    assert delivery.state == State.DELIVERED
    # The same webhook-id as the attempts before: a receiver that had it would see a repeat.
    assert {got.webhook_id for got in receiver.received()} == {delivery.event_id}
    assert [got.answered for got in receiver.received()] == [503, 200]


def test_view_only_staff_see_deliveries_but_cannot_replay(client, receiver):
    delivery = _exhausted(receiver)
    client.force_login(StaffFactory(permissions=VIEW_ONLY))
    listing = client.get(reverse(CHANGELIST))
    assert listing.status_code == 200 and delivery.event_id in listing.text
    assert "Replay" not in listing.text
    _replay(client, delivery)
    delivery.refresh_from_db()
    assert delivery.state == State.EXHAUSTED and delivery.replays == 0
    # Nor can they add a subscriber (which would show a secret).
    assert client.get(reverse("admin:outbound_subscriber_add")).status_code == 403


def test_staff_outside_outbound_see_nothing_and_anonymous_are_sent_to_login(client, receiver):
    client.force_login(StaffFactory(permissions=("sources.view_userdatasource",)))
    assert client.get(reverse(CHANGELIST)).status_code == 403
    client.logout()
    answer = client.get(reverse(CHANGELIST))
    assert answer.status_code == 302 and "/login/" in answer["Location"]


def test_a_new_subscriber_s_secret_is_shown_once_and_stored_encrypted(client, raw_db, settings):
    settings.SIBLING_SUBSCRIBER_ALLOW_HTTP = False
    client.force_login(_superuser())
    answer = client.post(
        reverse("admin:outbound_subscriber_add"),
        {
            "name": "Insights",
            # A public address literal: accepted without a DNS lookup.
            "url": "https://93.184.215.14/hooks/sibling",
            "event_types": [RECORDS_CHANGED],
            "categories": ["behavioral"],
        },
    )
    assert answer.status_code == 200, answer.content[:2000]
    assert "no-cache" in answer["Cache-Control"] or "no-store" in answer["Cache-Control"]
    subscriber = Subscriber.objects.get(name="Insights")
    secret = subscriber.secret
    assert secret.startswith("whsec_") and secret in answer.text
    stored = raw_db[Subscriber._meta.db_table].find_one({"_id": subscriber.pk})
    assert isinstance(stored["secret"], bson.Binary) and stored["secret"].subtype == 6
    assert secret.encode() not in bson.encode(stored)
    page = client.get(reverse("admin:outbound_subscriber_change", args=[subscriber.pk]))
    assert page.status_code == 200 and secret not in page.text
    listing = client.get(reverse("admin:outbound_subscriber_changelist"))
    assert secret not in listing.text


def test_private_and_http_endpoints_are_refused_outside_development(client, settings):
    settings.SIBLING_SUBSCRIBER_ALLOW_HTTP = False
    client.force_login(_superuser())
    for url, words in (
        ("http://93.184.215.14/hook", "https://"),
        ("https://127.0.0.1/hook", "private"),
        ("https://10.1.2.3/hook", "private"),
        ("https://169.254.169.254/latest/meta-data", "private"),
        ("https://[::1]/hook", "private"),
        ("https://[::ffff:192.168.0.1]/hook", "private"),
        ("https://localhost/hook", "private"),
        ("https://user:pw@93.184.215.14/hook", "user name"),
    ):
        answer = client.post(
            reverse("admin:outbound_subscriber_add"),
            {"name": "x", "url": url, "event_types": [RECORDS_CHANGED], "categories": ["external"]},
        )
        assert answer.status_code == 200 and words in answer.text, url
    assert not Subscriber.objects.exists()
    settings.SIBLING_SUBSCRIBER_ALLOW_HTTP = True
    answer = client.post(
        reverse("admin:outbound_subscriber_add"),
        {
            "name": "local",
            "url": "http://127.0.0.1:9/hook",
            "event_types": [RECORDS_CHANGED],
            "categories": ["external"],
        },
    )
    assert answer.status_code == 200 and Subscriber.objects.filter(name="local").exists()


def test_a_delivery_to_a_private_address_is_refused_on_connecting(receiver, settings):
    """The host name resolves to loopback when the delivery is made (as after DNS rebinding):
    the connection is closed before anything is sent."""
    settings.SIBLING_SUBSCRIBER_ALLOW_HTTP = False
    port = receiver.subscriber.url.split(":")[2].split("/")[0]
    Subscriber.objects.filter(pk=receiver.subscriber.pk).update(
        url=f"https://localhost:{port}/sandbox/_receiver/tests/"
    )
    event_emit(event_type=CONNECTION_CREATED, data={}, person="p")
    send()
    [delivery] = Delivery.objects.all()
    assert delivery.state == State.FAILED
    assert delivery.last_error.startswith("refused: the endpoint's address is private")
    assert receiver.received() == []
    # http to the same place is refused too, without connecting.
    Subscriber.objects.filter(pk=receiver.subscriber.pk).update(
        url=f"http://127.0.0.1:{port}/sandbox/_receiver/tests/"
    )
    Delivery.objects.update(next_attempt_at=timezone.now())
    send()
    delivery.refresh_from_db()
    assert delivery.last_error.startswith("refused: http") and receiver.received() == []


def test_a_subscriber_failing_too_long_is_paused_and_staff_see_why(client, receiver, settings):
    settings.SIBLING_OUTBOUND_PAUSE_AFTER_S = 0
    receiver.down()
    event_emit(event_type=CONNECTION_CREATED, data={}, person="p")
    send()
    subscriber = Subscriber.objects.get(pk=receiver.subscriber.pk)
    assert not subscriber.active
    assert "Every delivery has failed since" in subscriber.paused_reason
    assert "HTTP 503" in subscriber.paused_reason
    client.force_login(StaffFactory(permissions=VIEW_ONLY))
    listing = client.get(reverse("admin:outbound_subscriber_changelist"))
    assert "Every delivery has failed since" in listing.text
    assert "Resume" not in listing.text

    # A superuser resumes it once the endpoint is back: what waited goes.
    receiver.down(False)
    client.force_login(_superuser())
    answer = client.post(
        reverse("admin:outbound_subscriber_changelist"),
        {"action": "resume", "_selected_action": [str(subscriber.pk)]},
        follow=True,
    )
    assert "1 deliveries go now" in answer.text
    send()
    assert len(receiver.verified()) == 1


def test_an_endpoint_answering_410_pauses_its_subscriber(receiver):
    receiver.down(status=410)
    event_emit(event_type=CONNECTION_CREATED, data={}, person="p")
    send()
    subscriber = Subscriber.objects.get(pk=receiver.subscriber.pk)
    assert not subscriber.active and "410" in subscriber.paused_reason
    [delivery] = Delivery.objects.all()
    assert delivery.state == State.FAILED and delivery.last_status == 410
    assert send() == 0  # nothing more until staff resume it


def test_pausing_by_hand_needs_the_permission(client, receiver):
    client.force_login(StaffFactory(permissions=VIEW_ONLY))
    client.post(
        reverse("admin:outbound_subscriber_changelist"),
        {"action": "pause", "_selected_action": [str(receiver.subscriber.pk)]},
    )
    assert Subscriber.objects.get(pk=receiver.subscriber.pk).active
    subscriber_pause(receiver.subscriber, reason="by hand")
    assert not Subscriber.objects.get(pk=receiver.subscriber.pk).active


def test_a_rotated_secret_is_shown_once_and_both_secrets_verify_for_a_day(client, receiver):
    client.force_login(StaffFactory(permissions=VIEW_ONLY))
    client.post(
        reverse("admin:outbound_subscriber_changelist"),
        {"action": "rotate_secret", "_selected_action": [str(receiver.subscriber.pk)]},
    )
    assert Subscriber.objects.get(pk=receiver.subscriber.pk).secret == receiver.secret

    client.force_login(_superuser())
    answer = client.post(
        reverse("admin:outbound_subscriber_changelist"),
        {"action": "rotate_secret", "_selected_action": [str(receiver.subscriber.pk)]},
    )
    subscriber = Subscriber.objects.get(pk=receiver.subscriber.pk)
    assert subscriber.secret != receiver.secret and subscriber.secret in answer.text
    assert receiver.secret not in answer.text
    assert subscriber.previous_secret == receiver.secret

    # The endpoint still holds the old secret: it verifies (the second signature).
    event_emit(event_type=CONNECTION_CREATED, data={}, person="p")
    send()
    assert len(receiver.verified()) == 1
    # Switched to the new one: verifies too.
    from sources.sandbox.receiver import receiver_endpoint_set

    receiver_endpoint_set(receiver.endpoint, secret=subscriber.secret)
    event_emit(event_type=CONNECTION_CREATED, data={}, person="q")
    send()
    assert len(receiver.verified()) == 2
    # A day later only the new secret signs: the old one no longer verifies.
    Subscriber.objects.filter(pk=subscriber.pk).update(previous_secret_until=timezone.now())
    receiver_endpoint_set(receiver.endpoint, secret=receiver.secret)
    event_emit(event_type=CONNECTION_CREATED, data={}, person="r")
    send()
    assert len(receiver.verified()) == 2 and receiver.received()[-1].answered == 401
