import json

import pytest

from sources import providers
from sources.sandbox import registry
from sources.sandbox.faults import (
    SHARED_FAULTS,
    FaultError,
    fault_clear,
    fault_names,
    fault_set,
    fault_take,
    faults_pending,
)

from .oauth import google_providers

pytestmark = pytest.mark.django_db


def own_namespaces() -> list[str]:
    """Registered providers whose accounts are their own (no family)."""
    return [p for p in providers.PROVIDERS if registry.family_of(p) is None]


def test_counted_faults_are_consumed_once_each():
    fault_set("google", "Someone@Example.com", "rate_limit", count=2)
    assert faults_pending("google", "someone@example.com") == {"rate_limit"}
    assert fault_take("google", "someone@example.com", "rate_limit")
    assert fault_take("google", "someone@example.com", "rate_limit")
    assert not fault_take("google", "someone@example.com", "rate_limit")
    assert faults_pending("google", "someone@example.com") == set()


def test_a_google_provider_id_addresses_the_google_account():
    for provider in google_providers():
        fault_set(provider.id, "Someone@Example.com", "server_error")
        assert faults_pending("google", "someone@example.com") == {"server_error"}
        assert faults_pending(provider.id, "SOMEONE@example.com") == {"server_error"}
        fault_clear(provider.id, "someone@example.com")
        assert faults_pending("google", "someone@example.com") == set()


def test_clear_drops_pending_faults():
    for space in own_namespaces():
        fault_set(space, "account-1", "server_error", count=5)
        fault_set(space, "account-1", "malformed")
        fault_clear(space, "account-1", "server_error")
        assert faults_pending(space, "account-1") == {"malformed"}
        fault_clear(space, "account-1")
        assert faults_pending(space, "account-1") == set()


def test_every_namespace_honours_the_shared_faults_and_its_own():
    for space in [*registry.FAMILIES, *own_namespaces()]:
        names = fault_names(space)
        assert set(SHARED_FAULTS) <= names
        for module in registry.namespace_modules(space):
            assert set(getattr(module, "fault_names", ())) <= names


def test_a_providers_own_fault_is_refused_elsewhere():
    spaces = [*registry.FAMILIES, *own_namespaces()]
    own = {space: fault_names(space) - set(SHARED_FAULTS) for space in spaces}
    for space in spaces:
        foreign = set().union(*own.values()) - fault_names(space)
        for fault in foreign:
            with pytest.raises(FaultError):
                fault_set(space, "account-1", fault)


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (("no-such-provider", "a", "rate_limit"), {}),
        (("google", "", "rate_limit"), {}),
        (("google", "a@example.com", "no-such-fault"), {}),
        (("google", "a@example.com", "rate_limit"), {"count": 0}),
        (("google", "a@example.com", "rate_limit"), {"count": True}),
    ],
)
def test_invalid_faults_are_refused(args, kwargs):
    with pytest.raises(FaultError):
        fault_set(*args, **kwargs)


def test_http_endpoint_sets_lists_and_clears(client):
    space = own_namespaces()[0]
    body = {"provider": space, "account": "account-k", "fault": "rate_limit", "count": 3}
    answer = client.post("/sandbox/_faults", json.dumps(body), content_type="application/json")
    assert answer.status_code == 200
    assert faults_pending(space, "account-k") == {"rate_limit"}
    assert client.get("/sandbox/_faults").json()["faults"] == [
        {"provider": space, "account": "account-k", "fault": "rate_limit", "remaining": 3}
    ]
    clear = {"action": "clear", "provider": space, "account": "account-k"}
    answer = client.post("/sandbox/_faults", json.dumps(clear), content_type="application/json")
    assert answer.status_code == 200
    assert faults_pending(space, "account-k") == set()
    for bad in ["nope", json.dumps({"provider": ["x"], "account": {}, "fault": 3, "count": "2"})]:
        answer = client.post("/sandbox/_faults", bad, content_type="application/json")
        assert answer.status_code == 400
    other = json.dumps({"action": "undo", "provider": space, "account": "a"})
    assert (
        client.post("/sandbox/_faults", other, content_type="application/json").status_code == 400
    )


def test_a_count_past_what_the_database_holds_is_refused_not_a_500(client):
    space = own_namespaces()[0]
    body = {"provider": space, "account": "account-big", "fault": "rate_limit", "count": 2**63}
    answer = client.post("/sandbox/_faults", json.dumps(body), content_type="application/json")
    assert answer.status_code == 400
    assert "count" in answer.json()["error"]
    assert faults_pending(space, "account-big") == set()
