"""The access ledger: every look at a person's decrypted data, every export, every replay, and
(batched per hour) every read by a Sibling service through the records API."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone
from pymongo.errors import DuplicateKeyError

from ingestion.models import AccessLedgerEntry, ServiceToken
from sibling import mongo

Action = AccessLedgerEntry.Action


class ReasonRequired(ValueError):
    """Staff must say why before they see personal data."""


def ledger_record(
    *,
    subject_id: Any,
    actor: AbstractBaseUser,
    action: str,
    scope: str,
    reason: str,
) -> AccessLedgerEntry:
    reason = (reason or "").strip()
    if not reason:
        raise ReasonRequired("a reason is required")
    return AccessLedgerEntry.objects.create(
        subject_id=subject_id,
        actor=actor,
        actor_is_staff=bool(getattr(actor, "is_staff", False)),
        action=action,
        scope=scope[:200],
        reason=reason[:500],
    )


def ledger_of(*, user: AbstractBaseUser, limit: int = 200) -> list[AccessLedgerEntry]:
    return list(
        AccessLedgerEntry.objects.filter(subject=user)
        .select_related("actor", "service")
        .order_by("-created_at")[:limit]
    )


def service_read_record(*, subject_id: Any, service: ServiceToken, counts: dict[str, int]) -> None:
    """Count a service's read of a person's data in their ledger: one entry per token, person
    and hour, its ``counts`` incremented (records per category, ``connections`` for a listing,
    ``requests`` always) by one atomic upsert, so concurrent reads never lose a count and a
    busy service adds at most one entry an hour per person.

    Raises on a database failure: a read that cannot be recorded is not answered.
    """
    now = timezone.now()
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)  # what MongoDB keeps
    bucket = now.replace(minute=0, second=0, microsecond=0)
    increments = {f"counts.{name}": n for name, n in counts.items() if n}
    increments["counts.requests"] = 1
    # The partial unique index (migration 0013) covers exactly these fields with this action.
    key = {
        "subject_id": subject_id,
        "service_id": service.pk,
        "bucket": bucket,
        "action": Action.SERVICE_READ.value,
    }
    update = {
        "$inc": increments,
        "$set": {"last_at": now},
        "$setOnInsert": {
            "actor_id": None,
            "actor_is_staff": False,
            "scope": f"records API, service “{service.name}”"[:200],
            "reason": f"Read by the service “{service.name}”"[:500],
            "created_at": now,
        },
    }
    collection = mongo.plain_database()[AccessLedgerEntry._meta.db_table]
    try:
        collection.update_one(key, update, upsert=True)
    except DuplicateKeyError:
        # Two first reads of the hour both tried to insert: the entry exists now.
        collection.update_one(key, update)
