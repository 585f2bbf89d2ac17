"""A Django cache on a MongoDB collection, shared by every process and host.

Rate limits (django-ratelimit, the events API's throttles) and django-q2's cluster statistics
need one cache that every web and worker process sees. Django's database cache does not work on
this backend and no maintained MongoDB cache library exists, so this is a small one:

- one document per key, ``{"_id": key, "v": value, "expires_at": datetime}``; integers are stored
  as BSON numbers (so ``incr`` is one atomic ``$inc``), everything else pickled as BSON Binary;
- ``add`` is atomic: an insert that the unique ``_id`` refuses when the key exists, or a
  compare-and-set that only replaces an expired document;
- a TTL index on ``expires_at`` removes expired documents (within about a minute); reads never
  trust a document whose time has passed, so expiry is exact for callers;
- every operation is a single-document command found by ``_id`` (the embedded server answers
  ``findAndModify`` by scanning, so ``incr`` is an ``update_one`` then a read: the value it returns
  includes this increment, and any made at the same moment by others).

Clients come from ``sibling.mongo`` (fork-safe), so the cache works in forked django-q2 workers.
``LOCATION`` names the collection (default ``cache``).
"""

from __future__ import annotations

import pickle
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import Binary
from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from sibling import mongo

# Keys without a timeout get a date no TTL monitor reaches, so every filter stays one range.
FOREVER = datetime(9999, 12, 31, tzinfo=UTC)
TTL_INDEX = "cache_ttl"
_indexed: set[tuple[str, str]] = set()
_indexed_lock = threading.Lock()


def _now() -> datetime:
    # BSON keeps milliseconds: compare at the precision that is stored.
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _encode(value: Any) -> Any:
    if type(value) is int and -(2**63) <= value < 2**63:
        return value
    return Binary(pickle.dumps(value, pickle.HIGHEST_PROTOCOL))


def _decode(stored: Any) -> Any:
    if isinstance(stored, bytes):  # Binary subtype 0 reads back as bytes
        return pickle.loads(stored)  # noqa: S301 (only this backend writes the collection)
    return stored


class MongoCache(BaseCache):
    def __init__(self, location: str, params: dict[str, Any]) -> None:
        super().__init__(params)
        self.collection_name = location or "cache"

    # --- plumbing ---------------------------------------------------------------------------

    def _collection(self) -> Collection:
        collection = mongo.plain_database()[self.collection_name]
        marker = (mongo.database_name(), self.collection_name)
        if marker not in _indexed:
            with _indexed_lock:
                if marker not in _indexed:
                    collection.create_index("expires_at", expireAfterSeconds=0, name=TTL_INDEX)
                    _indexed.add(marker)
        return collection

    def _expiry(self, timeout: Any) -> datetime | None:
        """When a value set now expires; None when it is already gone (timeout <= 0)."""
        seconds = self.default_timeout if timeout is DEFAULT_TIMEOUT else timeout
        if seconds is None:
            return FOREVER
        if seconds <= 0:
            return None
        return _now() + timedelta(seconds=seconds)

    def _live(self, document: dict[str, Any] | None, now: datetime) -> bool:
        return document is not None and document["expires_at"] > now

    # --- the cache contract -----------------------------------------------------------------

    def add(
        self, key: str, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        key = self.make_and_validate_key(key, version=version)
        expires_at = self._expiry(timeout)
        if expires_at is None:
            return False
        collection = self._collection()
        document = {"v": _encode(value), "expires_at": expires_at}
        try:
            collection.insert_one({"_id": key, **document})
            return True
        except DuplicateKeyError:
            # Taken, unless what holds the key has expired (and the TTL monitor is behind):
            # replace it only if it is still expired, so of two racing adds one wins.
            result = collection.update_one(
                {"_id": key, "expires_at": {"$lte": _now()}}, {"$set": document}
            )
            return result.modified_count == 1

    def get(self, key: str, default: Any = None, version: int | None = None) -> Any:
        key = self.make_and_validate_key(key, version=version)
        document = self._collection().find_one({"_id": key})
        if not self._live(document, _now()):
            return default
        return _decode(document["v"])

    def set(
        self, key: str, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> None:
        key = self.make_and_validate_key(key, version=version)
        expires_at = self._expiry(timeout)
        collection = self._collection()
        if expires_at is None:
            collection.delete_one({"_id": key})
            return
        collection.replace_one(
            {"_id": key}, {"v": _encode(value), "expires_at": expires_at}, upsert=True
        )

    def touch(self, key: str, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        key = self.make_and_validate_key(key, version=version)
        expires_at = self._expiry(timeout)
        collection = self._collection()
        if expires_at is None:
            return collection.delete_one({"_id": key}).deleted_count == 1
        result = collection.update_one(
            {"_id": key, "expires_at": {"$gt": _now()}}, {"$set": {"expires_at": expires_at}}
        )
        return result.matched_count == 1

    def delete(self, key: str, version: int | None = None) -> bool:
        key = self.make_and_validate_key(key, version=version)
        result = self._collection().delete_one({"_id": key, "expires_at": {"$gt": _now()}})
        return result.deleted_count == 1

    def has_key(self, key: str, version: int | None = None) -> bool:
        key = self.make_and_validate_key(key, version=version)
        return self._live(self._collection().find_one({"_id": key}, {"v": 0}), _now())

    def incr(self, key: str, delta: int = 1, version: int | None = None) -> int:
        """Add delta atomically; ValueError when the key is missing, expired or not an integer."""
        key = self.make_and_validate_key(key, version=version)
        collection = self._collection()
        result = collection.update_one(
            {"_id": key, "expires_at": {"$gt": _now()}, "v": {"$type": "number"}},
            {"$inc": {"v": delta}},
        )
        if result.matched_count == 0:
            raise ValueError(f"Key '{key}' not found")
        document = collection.find_one({"_id": key})
        if document is None:  # deleted in between
            raise ValueError(f"Key '{key}' not found")
        return int(document["v"])

    def clear(self) -> None:
        self._collection().delete_many({})
