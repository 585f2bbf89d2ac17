"""A subscriber of change notifications: the sandbox's verifying receiver, over real HTTP (the
test live server), registered as staff register one."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from outbound.emit import subscribers_forget
from outbound.models import EVENT_TYPES, Delivery, Subscriber
from outbound.signing import secret_generate
from sources.sandbox.models import ReceivedNotification
from sources.sandbox.receiver import receiver_endpoint_set, receiver_url
from tests.factories import UserFactory

CATEGORIES = ["external", "behavioral", "volunteered"]


@dataclass
class Receiver:
    endpoint: str
    subscriber: Subscriber
    secret: str

    def down(self, down: bool = True, status: int = 503) -> None:
        receiver_endpoint_set(self.endpoint, down=down, status=status)

    def received(self) -> list[ReceivedNotification]:
        return list(
            ReceivedNotification.objects.filter(endpoint=self.endpoint).order_by(
                "received_at", "pk"
            )
        )

    def verified(self) -> list[ReceivedNotification]:
        return [row for row in self.received() if row.verified]


def subscriber_add(
    url: str, *, name: str = "receiver", event_types=EVENT_TYPES, categories=CATEGORIES
) -> tuple[Subscriber, str]:
    secret = secret_generate()
    subscriber = Subscriber(
        name=name,
        url=url,
        secret=secret,
        event_types=list(event_types),
        categories=list(categories),
    )
    subscriber.save()
    return Subscriber.objects.get(pk=subscriber.pk), secret


@pytest.fixture(autouse=True)
def subscribers_forgotten():
    """Each process keeps a short-lived copy of the subscriber list; the database is emptied
    after each test without signals, so the copy goes too (other tests never see these)."""
    subscribers_forget()
    yield
    subscribers_forget()


@pytest.fixture
def sandbox(live_server, settings):
    settings.SIBLING_SANDBOX_BASE_URL = f"{live_server.url}/sandbox"
    settings.SIBLING_BACKFILL_DAYS = 14
    settings.SIBLING_SUBSCRIBER_ALLOW_HTTP = True
    subscribers_forget()
    yield live_server
    subscribers_forget()


@pytest.fixture
def receiver(sandbox) -> Receiver:
    """The sandbox receiver's endpoint ``tests`` and a subscriber (every event type and
    category) pointing at it, holding the same secret."""
    subscriber, secret = subscriber_add(receiver_url("tests", f"{sandbox.url}/sandbox"))
    receiver_endpoint_set("tests", secret=secret, down=False)
    return Receiver("tests", subscriber, secret)


@pytest.fixture
def person(db):
    return UserFactory()


def deliveries(**filters) -> list[Delivery]:
    return list(Delivery.objects.filter(**filters).order_by("created_at", "pk"))


def send() -> int:
    """What a worker does: send the deliveries that are due."""
    from outbound.tasks import deliveries_send

    return deliveries_send()
