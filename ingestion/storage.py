"""Writing records: one unordered bulk upsert per page and collection, every value sealed.

Records are keyed by (user, provider, kind, external_id), so writing a page twice changes nothing
but ``updated_at``: a sync that dies after storing a page and before saving its cursor repeats
that page without duplicating anything.

A record's whole ``data`` (every value that describes the person: amounts, steps, heart rates,
sleep, moods, names, subjects) goes into ``sealed``, one value encrypted with the person's data
key (one encryption per record). Only the envelope the system needs to find and count records
stays in plaintext: ``user, provider, kind, external_id, connection, occurred_at,
schema_version, ingested_at, updated_at, raw_page``. So once the key is destroyed, a backup
tells which providers and kinds a person had, when, and how many, and nothing else.
:func:`record_decode` is the one place that turns a stored record back into its data.

Before each page is stored, the person's erasure fence is checked (``ingestion.fence``): a sync
or event batch of a person being erased stops there with PersonErased, writing nothing.

A page's records are sealed and written in chunks of ``WRITE_CHUNK``: while one chunk's bulk upsert
is on its way to the database (from a writer thread of the page's own), the next chunk is sealed,
so the database writes while this process encrypts instead of each waiting for the other.
:func:`page_store` returns, or raises, only once every chunk it sent has been answered.
"""

from __future__ import annotations

import contextvars
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bson import Binary
from django.conf import settings
from django.utils import timezone
from pymongo import ASCENDING, DESCENDING, DeleteOne, UpdateOne
from pymongo.collection import Collection
from pymongo.results import BulkWriteResult

from ingestion.fence import person_fence_check
from ingestion.models import QuarantinedItem, RawPage, SyncRun, WebhookEvent
from ingestion.schemas import CATEGORY_COLLECTIONS, ProcessedPage, kind_get
from sibling import mongo
from sibling.encryption import value_decrypt, value_encrypt
from sources.models import UserDataSource


@dataclass
class StoreCounts:
    created: int = 0
    updated: int = 0
    deleted: int = 0
    quarantined: int = 0
    # What the writes concerned (for the records.changed notification): the kinds written or
    # deleted, and the earliest and latest occurred_at of the records written.
    kinds: set[str] = field(default_factory=set)
    occurred_from: datetime | None = None
    occurred_to: datetime | None = None

    def __iadd__(self, other: StoreCounts) -> StoreCounts:
        self.created += other.created
        self.updated += other.updated
        self.deleted += other.deleted
        self.quarantined += other.quarantined
        self.kinds |= other.kinds
        self.occurred_span(other.occurred_from)
        self.occurred_span(other.occurred_to)
        return self

    def occurred_span(self, moment: datetime | None) -> None:
        """Widen the occurred_at range to include moment."""
        if moment is None:
            return
        if self.occurred_from is None or moment < self.occurred_from:
            self.occurred_from = moment
        if self.occurred_to is None or moment > self.occurred_to:
            self.occurred_to = moment


def records_collection(name: str) -> Collection:
    return mongo.plain_database()[name]


# Operations per bulk write of a page. Sealing a chunk (one encryption per record, about 65 us
# each) overlaps the database's write of the chunk before; the server's cost per record is the
# same for chunks of 100 as for a whole page of 500 (measured on the embedded server).
WRITE_CHUNK = 100


class _ChunkedWrites:
    """Unordered bulk writes per collection, sent WRITE_CHUNK operations at a time, in order, by
    one writer thread while the caller prepares the next chunk; what is left is sent by
    :meth:`finish`. A page that fits one chunk is written in the caller's thread.

    Leaving the ``with`` block waits for every chunk sent (whether or not the block raised), so
    nothing is still being written once the caller returns; the first failed chunk's error is
    raised by :meth:`finish`, or by the next :meth:`add` (which then sends nothing more).
    """

    def __init__(self) -> None:
        self._pending: dict[str, list[Any]] = defaultdict(list)
        self._sent: list[Future[BulkWriteResult]] = []
        self._writer: ThreadPoolExecutor | None = None
        self.counts = StoreCounts()

    def __enter__(self) -> _ChunkedWrites:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._writer is not None:
            self._writer.shutdown(wait=True)  # every chunk sent has been answered

    def add(self, collection: str, operation: Any) -> None:
        operations = self._pending[collection]
        if len(operations) == WRITE_CHUNK:  # full, and more follows: send it
            self._send(collection, operations)
            operations = self._pending[collection] = []
        operations.append(operation)

    def finish(self) -> StoreCounts:
        """Send what is left, wait for every chunk, and count what they did."""
        left = [(name, operations) for name, operations in self._pending.items() if operations]
        self._pending.clear()
        if self._writer is None:
            for name, operations in left:  # nothing sent yet: no thread for a small page
                self._count(_bulk_write(name, operations))
            return self.counts
        for name, operations in left:
            self._send(name, operations)
        wait(self._sent)
        for future in self._sent:
            self._count(future.result())  # raises the first failure, in the order sent
        return self.counts

    def _send(self, collection: str, operations: list[Any]) -> None:
        for sent in self._sent:
            error = sent.exception() if sent.done() else None
            if error is not None:
                raise error
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="page-store")
        # The caller's context (log fields, the current trace span) follows the write.
        context = contextvars.copy_context()
        self._sent.append(self._writer.submit(context.run, _bulk_write, collection, operations))

    def _count(self, result: BulkWriteResult) -> None:
        self.counts.created += result.upserted_count
        self.counts.updated += result.modified_count
        self.counts.deleted += result.deleted_count


def _bulk_write(collection: str, operations: list[Any]) -> BulkWriteResult:
    return records_collection(collection).bulk_write(operations, ordered=False)


RECORD_INDEXES: list[tuple[list[tuple[str, int]], dict[str, Any]]] = [
    (
        [
            ("user", ASCENDING),
            ("provider", ASCENDING),
            ("kind", ASCENDING),
            ("external_id", ASCENDING),
        ],
        {"unique": True, "name": "record_key"},
    ),
    (
        [("user", ASCENDING), ("kind", ASCENDING), ("occurred_at", DESCENDING)],
        {"name": "user_kind_time"},
    ),
    # The records API's order: a person's records by (updated_at, _id), its cursor's position.
    (
        [("user", ASCENDING), ("updated_at", ASCENDING), ("_id", ASCENDING)],
        {"name": "user_updated"},
    ),
]


def indexes_ensure() -> None:
    """Every record index starts with user (the shard key in a sharded deployment). Each index
    costs every write, so there are three: the record key, a person's records by kind and time,
    and a person's records by update time (the records API's cursor order).
    """
    for name in set(CATEGORY_COLLECTIONS.values()):
        for keys, options in RECORD_INDEXES:
            records_collection(name).create_index(keys, **options)
    raw = mongo.plain_database()[RawPage._meta.db_table]
    raw.create_index("expires_at", expireAfterSeconds=0, name="raw_page_ttl")


def raw_page_store(
    *, connection: UserDataSource, stream: str, payload: Any, run: SyncRun | None
) -> RawPage:
    """Keep a provider page (encrypted) for reprocessing; PersonErased once the person's erasure
    has begun (the runner stores the raw page before the records)."""
    person_fence_check(connection.user_id)
    now = timezone.now()
    return RawPage.objects.create(
        user_id=connection.user_id,
        connection=connection,
        provider=connection.provider,
        stream=stream,
        run=run,
        payload=payload,
        fetched_at=now,
        expires_at=now + timedelta(days=settings.SIBLING_RAW_PAGE_RETENTION_DAYS),
    )


def page_store(
    *,
    connection: UserDataSource | None,
    stream: str,
    processed: ProcessedPage,
    raw_page_id: Any = None,
    run: SyncRun | None = None,
    user_id: Any = None,
    provider: str = "",
) -> StoreCounts:
    """Upsert the page's records, delete its removed ones, quarantine its invalid items.

    Records come from a connection, or (Sibling's own apps, the events API) from a person
    directly: then ``user_id`` and ``provider`` name them and ``connection`` is None.

    Raises PersonErased, before writing anything, once the person's erasure has begun.
    """
    counts = StoreCounts()
    now = timezone.now()
    if connection is not None:
        user_id, provider = connection.user_id, connection.provider
    # Once per page, not per record: one indexed read.
    person_fence_check(user_id)
    connection_id = connection.pk if connection is not None else None
    with _ChunkedWrites() as writes:
        for record in processed.records:
            kind = kind_get(record.kind)
            document: dict[str, Any] = {
                "connection": connection_id,
                "occurred_at": record.occurred_at,
                "sealed": value_encrypt(record.data, owner_id=user_id),
                "schema_version": kind.schema_version,
                "updated_at": now,
                "raw_page": raw_page_id,
            }
            key = {
                "user": user_id,
                "provider": provider,
                "kind": record.kind,
                "external_id": record.external_id,
            }
            update = {
                "$set": document,
                "$setOnInsert": {"ingested_at": now},
                # A record written before everything was sealed loses its plaintext on rewrite.
                "$unset": {"data": ""},
            }
            writes.add(kind.collection, UpdateOne(key, update, upsert=True))
            counts.kinds.add(record.kind)
            counts.occurred_span(record.occurred_at)
        for kind_name, external_id in processed.removed:
            key = {
                "user": user_id,
                "provider": provider,
                "kind": kind_name,
                "external_id": external_id,
            }
            writes.add(kind_get(kind_name).collection, DeleteOne(key))
            counts.kinds.add(kind_name)
        counts += writes.finish()
    if processed.quarantined:
        QuarantinedItem.objects.bulk_create(
            [
                QuarantinedItem(
                    user_id=user_id,
                    connection=connection,
                    provider=provider,
                    stream=stream,
                    kind=item.kind or "",
                    reason=item.reason[:300],
                    item=item.item,
                    run=run,
                )
                for item in processed.quarantined
            ]
        )
        counts.quarantined = len(processed.quarantined)
    return counts


def record_data_seal(document: dict[str, Any], *, owner_id: Any) -> Binary:
    """The ciphertext of a stored record's whole data (its plaintext ``data`` and any
    ``sealed`` part of the earlier layout, merged), for sealing a record written before."""
    return value_encrypt(record_decode(document, owner_id=owner_id)["data"], owner_id=owner_id)


def record_decode(document: dict[str, Any], *, owner_id: Any) -> dict[str, Any]:
    """A raw record as the application reads it: ``data`` decrypted from ``sealed`` (under the
    owner's key only).

    Records stored before every value was sealed keep part of their data in a plaintext
    ``data`` beside ``sealed`` (sensitive fields only, or none); the two are merged until
    ``manage.py records_seal`` has rewritten them.
    """
    sealed = document.get("sealed")
    opened = value_decrypt(sealed, owner_id=owner_id) if sealed is not None else {}
    return {**document, "sealed": opened, "data": {**(document.get("data") or {}), **opened}}


def connection_records_delete(*, connection: UserDataSource) -> int:
    deleted = 0
    for name in set(CATEGORY_COLLECTIONS.values()):
        # (user, provider) is the record key's prefix: the scan stays within this person's
        # records from this provider.
        result = records_collection(name).delete_many(
            {
                "user": connection.user_id,
                "provider": connection.provider,
                "connection": connection.pk,
            }
        )
        deleted += result.deleted_count
    RawPage.objects.filter(connection=connection).delete()
    QuarantinedItem.objects.filter(connection=connection).delete()
    WebhookEvent.objects.filter(connection=connection).delete()
    return deleted
