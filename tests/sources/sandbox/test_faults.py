import json

import pytest

from sources.sandbox.faults import FaultError, fault_clear, fault_set, fault_take, faults_pending

pytestmark = pytest.mark.django_db


def test_counted_faults_are_consumed_once_each():
    fault_set("google", "Someone@Example.com", "rate_limit", count=2)
    assert faults_pending("google", "someone@example.com") == {"rate_limit"}
    assert fault_take("google", "someone@example.com", "rate_limit")
    assert fault_take("google", "someone@example.com", "rate_limit")
    assert not fault_take("google", "someone@example.com", "rate_limit")
    assert faults_pending("google", "someone@example.com") == set()


def test_clear_drops_pending_faults():
    fault_set("plaid", "item-1", "server_error", count=5)
    fault_set("plaid", "item-1", "malformed")
    fault_clear("plaid", "item-1", "server_error")
    assert faults_pending("plaid", "item-1") == {"malformed"}
    fault_clear("plaid", "item-1")
    assert faults_pending("plaid", "item-1") == set()


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (("dropbox", "a", "rate_limit"), {}),
        (("google", "", "rate_limit"), {}),
        (("rescuetime", "sandbox-k", "plaid_mutation"), {}),
        (("google", "a@example.com", "rate_limit"), {"count": 0}),
    ],
)
def test_invalid_faults_are_refused(args, kwargs):
    with pytest.raises(FaultError):
        fault_set(*args, **kwargs)


def test_http_endpoint_sets_and_clears(client):
    body = {"provider": "rescuetime", "account": "sandbox-k", "fault": "rate_limit", "count": 3}
    assert (
        client.post(
            "/sandbox/_faults", json.dumps(body), content_type="application/json"
        ).status_code
        == 200
    )
    assert faults_pending("rescuetime", "sandbox-k") == {"rate_limit"}
    clear = {"action": "clear", "provider": "rescuetime", "account": "sandbox-k"}
    assert (
        client.post(
            "/sandbox/_faults", json.dumps(clear), content_type="application/json"
        ).status_code
        == 200
    )
    assert faults_pending("rescuetime", "sandbox-k") == set()
    assert (
        client.post("/sandbox/_faults", "nope", content_type="application/json").status_code == 400
    )
