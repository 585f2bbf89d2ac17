"""sibling.cache.MongoCache: Django's cache contract on the embedded database, atomic add and
incr under concurrency, exact expiry, and the system checks django-ratelimit runs."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from django.core import checks
from django.core.cache import cache, caches

from sibling.cache import TTL_INDEX, MongoCache
from sibling.mongo import plain_database


@pytest.fixture(autouse=True)
def empty_cache():
    cache.clear()
    yield
    cache.clear()


def _expire(key: str) -> None:
    """Move a key's expiry into the past, as time would (the TTL monitor may lag a minute)."""
    stored = cache.make_key(key)
    past = datetime.now(UTC) - timedelta(seconds=1)
    plain_database()["cache"].update_one({"_id": stored}, {"$set": {"expires_at": past}})


def test_the_default_cache_is_the_shared_mongodb_cache():
    assert isinstance(caches["default"], MongoCache)


def test_get_set_delete_has_key_clear():
    assert cache.get("a") is None and cache.get("a", "dflt") == "dflt"
    cache.set("a", {"nested": [1, "two", 3.0]})
    cache.set("n", 5)
    assert cache.get("a") == {"nested": [1, "two", 3.0]} and cache.get("n") == 5
    assert cache.has_key("a") and not cache.has_key("b")
    assert cache.get_many(["a", "n", "b"]) == {"a": {"nested": [1, "two", 3.0]}, "n": 5}
    assert cache.delete("a") and not cache.delete("a")
    cache.set("flag", True)
    assert cache.get("flag") is True  # a bool stays a bool, not 1
    cache.clear()
    assert cache.get("n") is None


def test_values_are_stored_as_binary_and_integers_as_numbers():
    cache.set("obj", ["x"])
    cache.set("count", 7)
    raw = plain_database()["cache"]
    assert isinstance(raw.find_one({"_id": cache.make_key("obj")})["v"], bytes)
    assert raw.find_one({"_id": cache.make_key("count")})["v"] == 7
    assert TTL_INDEX in raw.index_information()
    assert raw.index_information()[TTL_INDEX]["expireAfterSeconds"] == 0


def test_add_only_when_absent_or_expired():
    assert cache.add("k", 1, 60)
    assert not cache.add("k", 2, 60)
    assert cache.get("k") == 1
    _expire("k")
    assert cache.get("k") is None and not cache.has_key("k")
    assert cache.add("k", 3, 60)  # the expired document is replaced, not a duplicate
    assert cache.get("k") == 3


def test_a_zero_timeout_stores_nothing_and_none_keeps_forever():
    assert not cache.add("zero", 1, 0)
    cache.set("zero", 1, 0)
    assert cache.get("zero") is None
    cache.set("forever", 1, None)
    stored = plain_database()["cache"].find_one({"_id": cache.make_key("forever")})
    assert stored["expires_at"].year == 9999


def test_incr_is_atomic_and_refuses_missing_or_expired_keys():
    with pytest.raises(ValueError):
        cache.incr("missing")
    cache.set("c", 0, 60)
    with ThreadPoolExecutor(8) as pool:
        seen = list(pool.map(lambda _: cache.incr("c"), range(40)))
    assert cache.get("c") == 40  # no increment lost
    assert max(seen) == 40 and all(value >= 1 for value in seen)
    assert cache.incr("c", 5) == 45 and cache.decr("c", 3) == 42
    _expire("c")
    with pytest.raises(ValueError):
        cache.incr("c")
    cache.set("text", "abc")
    with pytest.raises(ValueError):
        cache.incr("text")


def test_concurrent_adds_let_exactly_one_win():
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda n: cache.add("race", n, 60), range(16)))
    assert results.count(True) == 1
    _expire("race")
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda n: cache.add("race", n, 60), range(16)))
    assert results.count(True) == 1


def test_touch_extends_a_live_key_only():
    cache.set("t", 1, 60)
    assert cache.touch("t", 3600)
    _expire("t")
    assert not cache.touch("t", 3600)


def test_ratelimit_cache_checks_pass():
    from django_ratelimit.checks import check_caches

    errors = [e for e in check_caches(None) if e.level >= checks.ERROR]
    assert errors == []
    assert not [
        message
        for message in checks.run_checks(tags=[checks.Tags.caches])
        if message.id and message.id.startswith("django_ratelimit") and not message.is_silenced()
    ]
