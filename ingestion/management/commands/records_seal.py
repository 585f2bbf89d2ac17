"""Seal the records written before every value was sealed.

Such a record keeps part of its data readable in ``data`` (steps, amounts, heart rates...) and
the rest in ``sealed``. This command rewrites each one in the current layout: its whole data in
``sealed``, encrypted with the person's data key, and no ``data`` left.

Safe to run twice, or again after it was stopped: it goes through each collection in ``_id``
order, a batch at a time, and picks only records that still have a ``data`` field, so a record
is never sealed twice and a run resumes where the last one got to. A record that a sync rewrites
meanwhile is left to the sync (the update requires ``data`` to be still there).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from pymongo import ASCENDING, DeleteOne, UpdateOne

from ingestion.errors import PersonErased
from ingestion.fence import data_key_ensure
from ingestion.schemas import CATEGORY_COLLECTIONS
from ingestion.storage import record_data_seal, records_collection
from sibling.encryption import EncryptionFailure

BATCH_SIZE = 500
UNSEALED = {"data": {"$exists": True}}


def records_seal(*, batch_size: int = BATCH_SIZE, log: Any = None) -> Counter:
    """Seal every record still holding plaintext ``data``; the counts by outcome."""
    counts: Counter = Counter()
    owners: dict[Any, bool] = {}  # person -> may be sealed (has, or may get, a data key)
    for name in sorted(set(CATEGORY_COLLECTIONS.values())):
        collection = records_collection(name)
        last_id = None
        while True:
            query = dict(UNSEALED) if last_id is None else {**UNSEALED, "_id": {"$gt": last_id}}
            batch = list(collection.find(query).sort("_id", ASCENDING).limit(batch_size))
            if not batch:
                break
            last_id = batch[-1]["_id"]
            operations: list[Any] = []
            for document in batch:
                owner = document.get("user")
                if owner not in owners:
                    owners[owner] = _owner_may_seal(owner)
                if not owners[owner]:
                    # Left over from a person whose erasure has begun: nothing of theirs stays.
                    operations.append(DeleteOne({"_id": document["_id"], **UNSEALED}))
                    counts["erased_deleted"] += 1
                    continue
                try:
                    sealed = record_data_seal(document, owner_id=owner)
                except EncryptionFailure:
                    # Its earlier sealed part cannot be read (a foreign or destroyed key): kept as
                    # it is for an operator to look at, never half rewritten.
                    counts["failed"] += 1
                    continue
                operations.append(
                    UpdateOne(
                        {"_id": document["_id"], **UNSEALED},
                        {"$set": {"sealed": sealed}, "$unset": {"data": ""}},
                    )
                )
                counts["sealed"] += 1
            if operations:
                collection.bulk_write(operations, ordered=False)
            if log is not None:
                log(f"{name}: sealed {counts['sealed']} so far")
    return counts


def _owner_may_seal(owner: Any) -> bool:
    if owner is None:
        return False
    try:
        data_key_ensure(owner)
    except PersonErased:
        return False
    return True


class Command(BaseCommand):
    help = (
        "Seal records written before every value was sealed: their whole data encrypted with "
        "the person's key, no plaintext data left. Idempotent and resumable."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)

    def handle(self, *args: Any, **options: Any) -> None:
        verbose = options["verbosity"] > 1
        counts = records_seal(
            batch_size=max(1, options["batch_size"]),
            log=self.stdout.write if verbose else None,
        )
        self.stdout.write(
            f"{counts['sealed']} records sealed, {counts['erased_deleted']} left over from "
            f"erased people deleted, {counts['failed']} could not be read and were left as they are"
        )
