"""Withdrawing Sibling's access at a provider, and asking again until the provider confirms.

A grant ends only when the provider confirms the revocation the way its documentation says
(``Provider.revoke_token``). When it does not (a refusal, a 5xx, a network error, a timeout), the
token that ends the grant is kept as a PendingRevocation, encrypted with the person's data key,
and retried with exponential backoff by the periodic task ``sources.tasks.revocations_retry``.
After ``MAX_ATTEMPTS`` the row stays, marked "gave up", so the person (Connections) and staff
(admin) still see that the grant may be alive. Logs and rows name the provider and the error's
class or code, never a token.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from sibling.encryption import value_encrypt
from sources.models import PendingRevocation
from sources.providers import Provider
from sources.providers.base import RevocationError, RevocationToken

logger = logging.getLogger(__name__)
State = PendingRevocation.State

# Attempts in all, the first one included; with the backoff below (5 min doubling, at most 12 h)
# the last comes about 33 hours after the first.
MAX_ATTEMPTS = 10
BACKOFF_FIRST = timedelta(minutes=5)
BACKOFF_MAX = timedelta(hours=12)
# How long a retry run holds a row it claimed, so a schedule that fires twice (django-q2's
# scheduler is not exclusive on this database) does not ask the provider twice at once.
CLAIM = timedelta(minutes=2)
RETRY_BATCH = 200


def backoff_delay(attempts: int) -> timedelta:
    """The wait after the given number of failed attempts: 5 min, 10, 20, ... at most 12 h."""
    return min(BACKOFF_FIRST * 2 ** max(attempts - 1, 0), BACKOFF_MAX)


@dataclass
class RevocationOutcome:
    """What became of one revocation: confirmed, or the error and the row kept to retry."""

    confirmed: bool
    error: RevocationError | None = None
    pending: PendingRevocation | None = None


def revocation_attempt(
    *, provider: type[Provider], token: RevocationToken
) -> RevocationError | None:
    """Ask the provider once; None when it confirmed, else why not (safe to log)."""
    try:
        provider.revoke_token(token)
    except RevocationError as err:
        return err
    except Exception as err:  # any other failure is "not confirmed" too, never a crash
        # Only the class: an unexpected exception's text could hold anything.
        return RevocationError(
            f"{provider.name} did not confirm that Sibling's access was withdrawn",
            code=type(err).__name__,
        )
    return None


def grant_revoke(
    *,
    user_id: Any,
    provider: type[Provider],
    token: RevocationToken,
    connection_id: Any = None,
    keep_pending: bool = True,
) -> RevocationOutcome:
    """Revoke the grant; when the provider does not confirm, keep it to retry (``keep_pending``).

    ``keep_pending=False`` is for an erasure, which must not leave new ciphertext behind: the
    failure is only reported.
    """
    error = revocation_attempt(provider=provider, token=token)
    if error is None:
        logger.info("%s: the grant is revoked", provider.id)
        return RevocationOutcome(confirmed=True)
    logger.warning(
        "%s: revocation not confirmed (%s)%s",
        provider.id,
        error.code,
        ", will retry" if keep_pending else "",
    )
    if not keep_pending:
        return RevocationOutcome(confirmed=False, error=error)
    now = timezone.now()
    token = error.retry_token or token
    pending = PendingRevocation.objects.create(
        user_id=user_id,
        connection_id=connection_id,
        provider=provider.id,
        token=token.value,
        token_type_hint=token.hint,
        attempts=1,
        last_attempt_at=now,
        next_attempt_at=now + backoff_delay(1),
        last_error=error.code,
    )
    return RevocationOutcome(confirmed=False, error=error, pending=pending)


def _attempt_pending(pending: PendingRevocation) -> RevocationError | None:
    try:
        provider = pending.provider_class
    except LookupError:  # a provider taken out of the registry cannot be asked any more
        return RevocationError("The provider is not available", code="ProviderNotFound")
    token = RevocationToken(pending.token, pending.token_type_hint)
    return revocation_attempt(provider=provider, token=token)


def revocation_retry(*, pending: PendingRevocation, now: datetime | None = None) -> bool:
    """One more attempt: the row is deleted when confirmed, else rescheduled or given up."""
    now = now or timezone.now()
    error = _attempt_pending(pending)
    if error is None:
        logger.info("%s: pending revocation %s confirmed", pending.provider, pending.pk)
        pending.delete()
        return True
    pending.attempts += 1
    pending.last_attempt_at = now
    pending.last_error = error.code
    replaced = {}
    if error.retry_token is not None:
        # The attempt spent the kept token (a rotating refresh): the next one needs its successor.
        replaced = {
            "token": value_encrypt(error.retry_token.value, owner_id=pending.user_id),
            "token_type_hint": error.retry_token.hint,
        }
    if pending.attempts >= MAX_ATTEMPTS:
        pending.state = State.GAVE_UP
        pending.next_attempt_at = None
        logger.error(
            "%s: pending revocation %s not confirmed after %s attempts (%s); giving up",
            pending.provider,
            pending.pk,
            pending.attempts,
            error.code,
        )
    else:
        pending.next_attempt_at = now + backoff_delay(pending.attempts)
        logger.warning(
            "%s: pending revocation %s not confirmed (%s), attempt %s",
            pending.provider,
            pending.pk,
            error.code,
            pending.attempts,
        )
    # An update, not save(): a row settled meanwhile (an erasure, another attempt that was
    # confirmed) stays deleted, and this attempt does not fail for it.
    PendingRevocation.objects.filter(pk=pending.pk).update(
        attempts=pending.attempts,
        last_attempt_at=pending.last_attempt_at,
        last_error=pending.last_error,
        state=pending.state,
        next_attempt_at=pending.next_attempt_at,
        **replaced,
    )
    return False


def revocations_retry_due(*, now: datetime | None = None, limit: int = RETRY_BATCH) -> int:
    """Retry every pending revocation that is due; returns how many were confirmed.

    Each row is claimed first with a conditional update of its ``next_attempt_at``, so two runs
    at the same time never ask for the same one.
    """
    now = now or timezone.now()
    due = list(
        PendingRevocation.objects.filter(state=State.PENDING, next_attempt_at__lte=now).order_by(
            "next_attempt_at"
        )[:limit]
    )
    confirmed = 0
    for pending in due:
        claimed = PendingRevocation.objects.filter(
            pk=pending.pk, state=State.PENDING, next_attempt_at=pending.next_attempt_at
        ).update(next_attempt_at=now + CLAIM)
        if claimed:
            confirmed += revocation_retry(pending=pending, now=now)
    return confirmed


def revocation_retry_now(*, pending: PendingRevocation) -> bool:
    """Staff's "retry now": one attempt at once, also for a row that gave up."""
    if pending.state == State.GAVE_UP:
        # One more attempt: on failure it gives up again.
        pending.attempts = max(pending.attempts, MAX_ATTEMPTS - 1)
    pending.state = State.PENDING
    return revocation_retry(pending=pending)


def person_revocations_settle(*, user_id: Any) -> list[str]:
    """For an erasure: one last attempt at each of the person's pending revocations, then the
    rows are deleted (their tokens are the person's data). Returns the providers' names whose
    revocation was still not confirmed."""
    not_confirmed = []
    for pending in PendingRevocation.objects.filter(user_id=user_id):
        error = _attempt_pending(pending)
        if error is not None:
            logger.warning(
                "%s: revocation not confirmed before an erasure (%s)", pending.provider, error.code
            )
            not_confirmed.append(pending.get_provider_display())
        pending.delete()
    return not_confirmed


def connect_tokens_revoke(*, provider: type[Provider], response: dict[str, Any], user: Any) -> bool:
    """Revoke what a refused connect obtained (the token endpoint's ``response``).

    With a signed-in person an unconfirmed revocation is kept and retried like any other;
    without one there is no data key to keep it under, so it is logged only. True when the
    provider confirmed (or there was nothing to revoke).
    """
    token = provider.revocation_token(response)
    if token is None:
        return True
    signed_in = user is not None and getattr(user, "is_authenticated", False)
    if signed_in:
        try:
            # A connect flow may create the person's data key (refused once their erasure has
            # begun); the pending revocation is encrypted with it.
            from ingestion.fence import data_key_ensure

            data_key_ensure(user.pk)
        except Exception as err:
            logger.warning(
                "%s: no data key to keep a refused connect's revocation under (%s)",
                provider.id,
                type(err).__name__,
            )
            signed_in = False
    outcome = grant_revoke(
        user_id=user.pk if signed_in else None,
        provider=provider,
        token=token,
        keep_pending=signed_in,
    )
    return outcome.confirmed
