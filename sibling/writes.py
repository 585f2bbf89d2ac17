"""Inserting rows on the hot path: one acknowledged write per caller, shared among callers.

A webhook is answered only once it is stored, so each delivery waits for its own insert. On a
busy receiver many deliveries wait at once, and most of what each single insert costs the
server is per command, not per document (on the embedded server, about 1 ms for one document
and 3 ms for eight). :func:`model_insert` therefore coalesces the inserts that concurrent
threads of one process ask for into one unordered ``insert_many`` (group commit). Nobody waits
for a batch to fill: the first caller writes at once, and whoever arrives while that write is
in flight goes into the next one. Every caller still returns only after its own document is
acknowledged, and learns on its own whether it was a duplicate.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from django.db import DEFAULT_DB_ALIAS, DatabaseError, IntegrityError, connections, models
from pymongo.errors import BulkWriteError

from sibling import mongo

DUPLICATE_KEY = 11000
MAX_BATCH = 100


def model_document(instance: models.Model) -> dict[str, Any]:
    """The document the ORM would insert for a new instance (encrypted fields encrypted)."""
    connection = connections[DEFAULT_DB_ALIAS]
    document = {}
    for model_field in instance._meta.concrete_fields:
        if model_field.primary_key:
            continue
        value = model_field.pre_save(instance, add=True)
        document[model_field.column] = model_field.get_db_prep_save(value, connection=connection)
    return document


def model_insert(instance: models.Model, *, extra: dict[str, Any] | None = None) -> None:
    """Insert a new instance as ``save()`` would (without signals), sharing the write with
    other threads inserting into the same collection. Raises IntegrityError on a duplicate
    key, as ``save()`` does. ``extra``: keys stored beside the model's fields, which the ORM
    neither reads nor writes (a webhook event's trace context)."""
    document = model_document(instance)
    if extra:
        document.update(extra)
    table = instance._meta.db_table
    inserter = mongo.register_process_local(f"inserter:{table}", lambda: _Inserter(table))
    inserter.insert(document)  # sets document["_id"]
    instance.pk = document["_id"]
    instance._state.adding = False
    instance._state.db = DEFAULT_DB_ALIAS


@dataclass
class _Pending:
    document: dict[str, Any]
    done: threading.Event = field(default_factory=threading.Event)
    lead: bool = False
    error: BaseException | None = None


class _Inserter:
    """Group commit for one collection: callers queue; one of them (the leader) writes every
    queued document in one insert_many, then hands the lead to the first caller still queued."""

    def __init__(self, table: str) -> None:
        self._table = table
        self._lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._writing = False

    def insert(self, document: dict[str, Any]) -> None:
        mine = _Pending(document)
        with self._lock:
            self._queue.append(mine)
            mine.lead = not self._writing
            self._writing = True
        if not mine.lead:
            mine.done.wait()
        if mine.lead:
            self._write_batch()
        if mine.error is not None:
            raise mine.error

    def _write_batch(self) -> None:
        with self._lock:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
        try:
            self._write(batch)
        finally:
            with self._lock:
                if self._queue:
                    successor = self._queue[0]
                    successor.lead = True
                else:
                    successor = None
                    self._writing = False
            for pending in batch:
                pending.lead = False
                pending.done.set()
            if successor is not None:
                successor.done.set()

    def _write(self, batch: list[_Pending]) -> None:
        collection = mongo.plain_database()[self._table]
        try:
            collection.insert_many([pending.document for pending in batch], ordered=False)
        except BulkWriteError as err:
            # Only a duplicate key is an IntegrityError (callers read it as "already stored");
            # any other refusal is a failed write.
            for write_error in err.details.get("writeErrors", []):
                pending = batch[write_error["index"]]
                if write_error.get("code") == DUPLICATE_KEY:
                    pending.error = IntegrityError(f"duplicate key in {self._table}")
                else:
                    pending.error = DatabaseError(
                        f"insert into {self._table} refused (code {write_error.get('code')})"
                    )
            if err.details.get("writeConcernErrors"):
                for pending in batch:
                    pending.error = pending.error or DatabaseError(
                        f"insert into {self._table} not acknowledged by the write concern"
                    )
        except Exception as err:  # the connection: nobody in the batch knows what was stored
            for pending in batch:
                pending.error = DatabaseError(f"insert into {self._table} failed")
                pending.error.__cause__ = err
