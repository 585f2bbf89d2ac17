"""The access ledger: every look at a person's decrypted data, every export, every replay."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser

from ingestion.models import AccessLedgerEntry

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
        .select_related("actor")
        .order_by("-created_at")[:limit]
    )
