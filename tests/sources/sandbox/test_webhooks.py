"""The webhook delivery every imitation shares, and the control API dispatching to them.

Each provider's own webhooks are tested in tests/sources/providers/<id>/."""

from __future__ import annotations

import pytest

from sources.sandbox import registry
from sources.sandbox.webhooks import default_receiver, deliver, post_once

from .recorder import FAST

pytestmark = pytest.mark.django_db


def test_deliver_retries_until_a_2xx_and_duplicates_the_same_bytes(recorder):
    recorder.statuses = [500, 429]
    statuses = deliver(recorder.url, b'{"a":1}', {"X-Test": "1"}, retry_delays=FAST)
    assert statuses == [500, 429, 204]
    recorder.requests.clear()
    assert deliver(recorder.url, b"x", {}, duplicate=True, retry_delays=FAST) == [204, 204]
    assert [r.body for r in recorder.requests] == [b"x", b"x"]
    recorder.statuses = [500] * 4
    assert deliver(recorder.url, b"x", {}, retry_delays=FAST) == [500] * 4


def test_no_answer_is_status_zero():
    assert post_once("http://127.0.0.1:9/hook/", b"x", {}) == 0
    assert deliver("http://127.0.0.1:9/hook/", b"x", {}, retry_delays=(0.01,)) == [0, 0]


def test_the_receiver_comes_from_the_public_url(settings):
    settings.SIBLING_PUBLIC_URL = "https://sibling.example/"
    assert default_receiver("any") == "https://sibling.example/webhooks/any/"
    settings.SIBLING_PUBLIC_URL = ""
    assert default_receiver("any") is None


def control(client, payload: object):
    return client.post("/sandbox/_webhooks", payload, content_type="application/json")


def senders() -> dict[str, dict]:
    return {
        provider_id: module.webhook_controls
        for provider_id, module in registry.sandbox_modules().items()
        if getattr(module, "webhook_controls", None)
    }


def test_every_sender_has_actions_and_unknown_ones_are_refused(client, settings, recorder):
    settings.SIBLING_PUBLIC_URL = recorder.base
    assert senders(), "no registered provider sends webhooks"
    for provider_id, actions in senders().items():
        assert all(callable(action) for action in actions.values())
        answer = control(client, {"provider": provider_id, "action": "no-such-action"})
        assert answer.status_code == 400
        assert "action must be one of" in answer.json()["error"]
    assert recorder.requests == []


@pytest.mark.parametrize(
    "payload", ["not an object", [], {}, {"provider": "no-such-provider"}, {"provider": ["x"]}]
)
def test_control_endpoint_refuses_bad_input(client, settings, recorder, payload):
    settings.SIBLING_PUBLIC_URL = recorder.base
    answer = control(client, payload)
    assert answer.status_code == 400, answer.content
    assert "error" in answer.json()
    assert recorder.requests == []


def test_control_endpoint_needs_a_public_url_and_a_post(client, settings):
    settings.SIBLING_PUBLIC_URL = ""
    provider_id = next(iter(senders()))
    answer = control(client, {"provider": provider_id})
    assert answer.status_code == 400 and "SIBLING_PUBLIC_URL" in answer.json()["error"]
    assert client.get("/sandbox/_webhooks").status_code == 405
