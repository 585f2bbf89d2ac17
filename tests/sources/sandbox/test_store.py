"""The generic per-account state store every imitation keeps its state in."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db import IntegrityError
from django.utils import timezone

from sources.sandbox.models import GoogleAccessToken, GoogleAuthCode, SandboxRecord
from sources.sandbox.store import (
    activity_tick_add,
    activity_ticks,
    record_create,
    record_delete,
    record_get,
    record_put,
    record_set,
    record_spend,
    records_of,
)

pytestmark = pytest.mark.django_db


def test_a_key_is_unique_per_namespace_and_kind():
    record_create("one", "token", "abc", account="acct")
    with pytest.raises(IntegrityError):
        record_create("one", "token", "abc")
    record_create("one", "other-kind", "abc")
    record_create("two", "token", "abc")
    assert SandboxRecord.objects.count() == 3
    assert record_get("one", "token", "abc").account == "acct"
    assert record_get("one", "token", "") is None
    assert record_delete("one", "token", "abc") == 1 and record_get("one", "token", "abc") is None


def test_records_of_an_account_in_order():
    first = record_create("ns", "item", "k1", account="a")
    second = record_create("ns", "item", "k2", account="a")
    record_create("ns", "item", "k3", account="b")
    record_create("ns", "watch", "k4", account="a")
    assert [r.pk for r in records_of("ns", "a", "item")] == [first.pk, second.pk]


def test_set_changes_only_the_named_fields():
    record = record_create("ns", "item", "k", data={"a": 1, "b": {"c": 2}})
    stale = record_get("ns", "item", "k")
    assert record_set(record, a=5)
    # A writer holding an older copy changes its own field without undoing the other's.
    assert record_set(stale, flag=True)
    assert record_get("ns", "item", "k").data == {"a": 5, "b": {"c": 2}, "flag": True}
    assert record.data == {"a": 5, "b": {"c": 2}}


def test_a_one_time_record_is_spent_once_and_expiry_is_honoured():
    now = timezone.now()
    token = record_create("ns", "code", "c", expires_at=now + timedelta(minutes=5))
    assert record_get("ns", "code", "c", live=True) is not None
    assert record_spend(token)
    assert not record_spend(token)
    assert record_get("ns", "code", "c", live=True) is None
    assert record_get("ns", "code", "c") is not None  # kept, as spent
    forever = record_create("ns", "code", "d")
    assert record_get("ns", "code", "d", live=True) is not None
    assert not record_spend(forever)  # nothing without an expiry is one-time


def test_put_replaces_data_and_keeps_created_at():
    record_put("ns", "watch", "w", account="a", data={"x": 1})
    first = record_get("ns", "watch", "w")
    again = record_put("ns", "watch", "w", account="a", data={"y": 2})
    assert again.pk == first.pk and again.data == {"y": 2}
    assert record_get("ns", "watch", "w").created_at == first.created_at


def test_activity_steps_are_numbered_per_account():
    for _ in range(3):
        activity_tick_add("ns", "a")
    activity_tick_add("ns", "b")
    ticks = activity_ticks("ns", "a")
    assert len(ticks) == 3 and ticks == sorted(ticks)
    assert len(activity_ticks("ns", "b")) == 1 and activity_ticks("other", "a") == []


def test_a_record_is_found_by_its_key_through_a_plain_unique_index(raw_db):
    """The backend's partial unique index is never chosen by the embedded planner (see
    sibling.migration_operations): every imitation call that reads a token would scan."""
    collection = raw_db[SandboxRecord._meta.db_table]
    index = next(i for i in collection.list_indexes() if i["name"] == "sandbox_record_unique")
    assert index["unique"] and "partialFilterExpression" not in index
    lookup = {"provider": "ns", "kind": "token", "key": "abc"}
    plan = json.dumps(collection.find(lookup).explain()["queryPlanner"]["winningPlan"])
    assert "IXSCAN" in plan and "sandbox_record_unique" in plan


@pytest.mark.parametrize("model", [SandboxRecord, GoogleAuthCode, GoogleAccessToken])
def test_expired_sandbox_state_has_a_ttl_index_of_a_day(raw_db, model):
    """A long-running development server keeps issuing codes and tokens: once expired for a
    day (an imitation still answers "expired" meanwhile), a TTL index removes them. Records
    without an expiry (null) are kept."""
    collection = raw_db[model._meta.db_table]
    ttl = [i for i in collection.list_indexes() if "expireAfterSeconds" in i]
    assert [(dict(i["key"]), i["expireAfterSeconds"]) for i in ttl] == [({"expires_at": 1}, 86400)]
