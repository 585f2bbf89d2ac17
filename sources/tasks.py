"""Periodic work of the sources app (django-q2 runs these by dotted path)."""

from __future__ import annotations

from sources.revocations import revocations_retry_due

SCHEDULE_NAME = "revocation-retry"
# Every few minutes: the first retry of a revocation comes five minutes after it failed.
SCHEDULE_MINUTES = 5


def revocations_retry() -> int:
    """Ask providers again for the pending revocations that are due; returns how many ended."""
    return revocations_retry_due()
