"""The generic per-account state store every provider imitation keeps its state in.

A record is (provider, kind, key) -> data, owned by an account, with an optional expiry (see
`SandboxRecord`). An imitation names its own kinds ("item", "link_token", "watch", ...); the
store knows none of them. Activity steps (`new_activity` faults) are records of kind "tick".

Reads go through the indexed fields only and check `data` in Python. Writes to `data` are
atomic per field (`record_set`), and one-time values are spent with a conditional update of the
expiry (`record_spend`), since this backend has no transactions.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import IntegrityError, connections, router
from django.utils import timezone

from .models import SandboxRecord

TICK = "tick"


def record_create(
    provider: str,
    kind: str,
    key: str,
    *,
    account: str = "",
    data: dict[str, Any] | None = None,
    expires_at: datetime | None = None,
    created_at: datetime | None = None,
) -> SandboxRecord:
    """A new record; raises IntegrityError when (provider, kind, key) is taken."""
    return SandboxRecord.objects.create(
        provider=provider,
        kind=kind,
        key=key,
        account=account,
        data=data or {},
        expires_at=expires_at,
        created_at=created_at or timezone.now(),
    )


def record_put(
    provider: str,
    kind: str,
    key: str,
    *,
    account: str = "",
    data: dict[str, Any] | None = None,
    expires_at: datetime | None = None,
) -> SandboxRecord:
    """Create or replace a record's account, data and expiry; `created_at` is kept on update."""
    record, _ = SandboxRecord.objects.update_or_create(
        provider=provider,
        kind=kind,
        key=key,
        defaults={"account": account, "data": data or {}, "expires_at": expires_at},
        create_defaults={
            "account": account,
            "data": data or {},
            "expires_at": expires_at,
            "created_at": timezone.now(),
        },
    )
    return record


def record_get(provider: str, kind: str, key: str, *, live: bool = False) -> SandboxRecord | None:
    """The record by its unique key; with `live`, None once it has expired."""
    if not key:
        return None
    record = SandboxRecord.objects.filter(provider=provider, kind=kind, key=key).first()
    if record is None or (live and not record_live(record)):
        return None
    return record


def record_live(record: SandboxRecord) -> bool:
    return record.expires_at is None or record.expires_at > timezone.now()


def records_of(provider: str, account: str, kind: str) -> list[SandboxRecord]:
    """An account's records of one kind, oldest first."""
    return sorted(
        SandboxRecord.objects.filter(provider=provider, account=account, kind=kind),
        key=lambda r: (r.created_at, str(r.pk)),
    )


def record_set(record: SandboxRecord, **changes: Any) -> bool:
    """Set fields of a record's `data` in one atomic update (other fields are left alone).

    Values must be JSON types. Updates `record.data` too; False when the record is gone.
    """
    if not changes:
        return True
    alias = router.db_for_write(SandboxRecord)
    collection = connections[alias].get_collection(SandboxRecord._meta.db_table)
    result = collection.update_one(
        {"_id": record.pk}, {"$set": {f"data.{name}": value for name, value in changes.items()}}
    )
    record.data = {**record.data, **changes}
    return bool(result.matched_count)


def record_spend(record: SandboxRecord) -> bool:
    """Spend a one-time record: True for the one caller that found it unexpired."""
    now = timezone.now()
    return bool(
        SandboxRecord.objects.filter(pk=record.pk, expires_at__gt=now).update(expires_at=now)
    )


def record_expire(record: SandboxRecord, at: datetime) -> None:
    SandboxRecord.objects.filter(pk=record.pk).update(expires_at=at)
    record.expires_at = at


def record_delete(provider: str, kind: str, key: str) -> int:
    deleted, _ = SandboxRecord.objects.filter(provider=provider, kind=kind, key=key).delete()
    return deleted


# --- Activity steps -------------------------------------------------------------------------------


def activity_tick_add(provider: str, account: str) -> datetime:
    """Append one step of simulated activity; a concurrent append makes us take the next number."""
    for _ in range(10):
        seq = SandboxRecord.objects.filter(provider=provider, account=account, kind=TICK).count()
        now = timezone.now()
        try:
            record_create(
                provider,
                TICK,
                f"{account}#{seq}",
                account=account,
                data={"seq": seq},
                created_at=now,
            )
        except IntegrityError:
            continue
        return now
    raise RuntimeError("could not record the activity step")


def activity_ticks(provider: str, account: str) -> list[datetime]:
    """When each activity step of the account happened, in order."""
    ticks = SandboxRecord.objects.filter(provider=provider, account=account, kind=TICK)
    return [t.created_at for t in sorted(ticks, key=lambda t: t.data.get("seq", 0))]
