"""Sending stored deliveries: in order per person and target, retried with backoff, replayable.

A worker task (:func:`deliveries_send`) takes the deliveries that are due. For each (target,
person) it sends the oldest delivery not yet delivered or exhausted (the head) and, once that
is done, the next: a later event of a person never overtakes an earlier one. A head that failed
holds the person's later deliveries until it is delivered or exhausted (they are parked until
the head's next attempt, so they are not read again meanwhile).

Attempts: at once, then after 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, and every 10 h after, until
``retry_until`` (the event's time plus ``SIBLING_OUTBOUND_MAX_AGE_S``, 3 days) would be passed:
the delivery is then "exhausted" and the person's next delivery goes. A 2xx answer is success;
a 410 pauses the subscriber (the endpoint asked to be sent nothing more); anything else, a
redirect, a timeout or an address refused is a failure. A subscriber all of whose deliveries
have failed for ``SIBLING_OUTBOUND_PAUSE_AFTER_S`` (a day) is paused, with the reason shown in
admin; a paused subscriber's deliveries wait (parked) until staff resume it.

Each attempt is claimed first with an atomic single-document update, so two workers never send
the same delivery at once; a claim left by a killed worker lapses after
:func:`claim_seconds`, when the delivery is due again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from outbound import registry
from outbound.http import PRIVATE_REFUSED, allow_private, session_new
from outbound.models import Delivery, Subscriber
from outbound.signing import event_body, headers_sign, secret_generate, timestamp_text
from sibling import mongo

logger = logging.getLogger(__name__)

State = Delivery.State
# Seconds to wait after the nth failed attempt (the last repeats), after Standard Webhooks'
# recommended schedule.
BACKOFF_S = (5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600)
# A paused subscriber's deliveries wait until it is resumed.
PARKED_UNTIL = datetime(3000, 1, 1, tzinfo=UTC)
OPEN = (State.PENDING, State.FAILED, State.SENDING)
STATUS_LINE_MAX = 200
HTTP_REFUSED_LINE = "refused: http (only https outside development)"


def claim_seconds() -> float:
    connect, read = settings.SIBLING_OUTBOUND_TIMEOUT_S
    return connect + read + 30


def retry_delay(failures: int) -> timedelta:
    """The wait after the ``failures``-th failed attempt (1 for the first)."""
    return timedelta(seconds=BACKOFF_S[min(max(failures, 1), len(BACKOFF_S)) - 1])


def event_document(delivery: Delivery) -> dict[str, Any]:
    """The event as an in-process handler receives it (the same as an HTTP body, with its id)."""
    return {
        "id": delivery.event_id,
        "type": delivery.event_type,
        "timestamp": timestamp_text(delivery.created_at),
        "data": delivery.data,
    }


def deliveries_send(*, limit: int = 500) -> int:
    """Send what is due (at most ``limit`` attempts); the number of attempts made."""
    groups = _due_groups(timezone.now(), limit)
    if not groups:  # the usual minutely run: no subscriber read, no secret decrypted
        return 0
    subscribers = {f"s:{s.pk}": s for s in Subscriber.objects.all()}
    attempts = 0
    session = session_new()
    try:
        for target, person in groups:
            if attempts >= limit:
                break
            attempts += _group_send(target, person, subscribers, session, limit - attempts)
    finally:
        session.close()
    return attempts


DUE_STATES = (State.PENDING, State.FAILED, State.SENDING)


def due_filter(state: str, now: datetime) -> dict[str, Any]:
    """The deliveries in ``state`` whose time has come (for ``sending``: a claim that lapsed, a
    killed worker's). One state per read, sent as written: on the embedded server an ``$in``
    beside a range, or the ORM's nested ``$and`` around one, scans the collection instead of
    reading the ``(state, next_attempt_at)`` index."""
    return {"state": str(state), "next_attempt_at": {"$lte": now}}


def _due_groups(now: datetime, limit: int) -> list[tuple[str, str]]:
    """The (target, person) groups with a delivery due, the longest due first."""
    collection = mongo.plain_database()[Delivery._meta.db_table]
    due: list[tuple[datetime, str, str]] = []
    for state in DUE_STATES:
        cursor = (
            collection.find(
                due_filter(state, now), projection={"target": 1, "person": 1, "next_attempt_at": 1}
            )
            .sort("next_attempt_at", 1)
            .limit(limit)
        )
        due += [(row["next_attempt_at"], row["target"], row.get("person", "")) for row in cursor]
    due.sort(key=lambda row: row[0])
    return list(dict.fromkeys((target, person) for _, target, person in due[:limit]))


def _group_send(
    target: str,
    person: str,
    subscribers: dict[str, Subscriber],
    session: requests.Session,
    limit: int,
) -> int:
    attempts = 0
    while attempts < limit:
        now = timezone.now()
        head = (
            Delivery.objects.filter(target=target, person=person, state__in=OPEN)
            .order_by("created_at", "pk")
            .first()
        )
        if head is None:
            return attempts
        subscriber = subscribers.get(target) if target.startswith("s:") else None
        if target.startswith("s:"):
            if subscriber is None:  # deleted meanwhile (its deliveries go with it)
                return attempts
            if not subscriber.active:
                # Paused: this person's queue waits until it is resumed (read through the
                # order index; the pause itself parked what was there then).
                Delivery.objects.filter(
                    target=target, person=person, state__in=[State.PENDING, State.FAILED]
                ).update(next_attempt_at=PARKED_UNTIL)
                return attempts
        if head.state == State.SENDING and head.claimed_until and head.claimed_until > now:
            return attempts  # another worker is sending it
        if head.state == State.FAILED and head.next_attempt_at > now:
            # Later deliveries of the person wait with it, unread until then. (Only fields of
            # the order index: a range on next_attempt_at beside them would scan.)
            Delivery.objects.filter(target=target, person=person, state=State.PENDING).update(
                next_attempt_at=head.next_attempt_at
            )
            return attempts
        if not delivery_claim(head, now):
            return attempts
        attempts += 1
        # Settled, the next one goes now; failed, the next round of the loop parks the
        # person's later deliveries behind it.
        _attempt(head, subscriber, session)
    return attempts


def delivery_claim(head: Delivery, now: datetime) -> bool:
    """Claim the delivery as read in ``head`` for one attempt: an atomic single-document update
    that matches only while the row is as it was read, so of two workers that read it alike,
    one claims it. A lapsed claim (a killed worker's) is matched by its ``claimed_until`` as
    well: taking it over changes neither state nor attempts, so two workers would both match."""
    unchanged: dict[str, Any] = {"pk": head.pk, "state": head.state, "attempts": head.attempts}
    if head.state == State.SENDING:
        unchanged["claimed_until"] = head.claimed_until
    lapse = now + timedelta(seconds=claim_seconds())
    # next_attempt_at too: a claim that lapses is due again, found through the due index.
    claimed = Delivery.objects.filter(**unchanged).update(
        state=State.SENDING, claimed_until=lapse, next_attempt_at=lapse
    )
    return bool(claimed)


def _attempt(delivery: Delivery, subscriber: Subscriber | None, session: requests.Session) -> None:
    """One attempt, its outcome stored: delivered, failed (with its next attempt), exhausted."""
    now = timezone.now()
    if subscriber is not None:
        status, error = _http_send(delivery, subscriber, session, now)
    else:
        status, error = None, _handler_run(delivery)
    if error is None and (status is None or 200 <= status < 300):
        _delivered(delivery, subscriber, status, now)
        return
    failures = delivery.attempts + 1
    line = error or f"HTTP {status}"
    if status == 410 and subscriber is not None:
        # The endpoint asked for nothing more: its deliveries wait until staff resume it.
        Delivery.objects.filter(pk=delivery.pk).update(
            state=State.FAILED,
            attempts=failures,
            last_attempt_at=now,
            last_status=status,
            last_error=line,
            claimed_until=None,
            next_attempt_at=PARKED_UNTIL,
        )
        subscriber_pause(
            subscriber,
            reason=f"The endpoint answered 410 Gone on {now:%Y-%m-%d %H:%M} UTC.",
        )
        return
    next_at = now + retry_delay(failures)
    exhausted = next_at > delivery.retry_until
    Delivery.objects.filter(pk=delivery.pk).update(
        state=State.EXHAUSTED if exhausted else State.FAILED,
        attempts=failures,
        last_attempt_at=now,
        last_status=status,
        last_error=line[:STATUS_LINE_MAX],
        claimed_until=None,
        next_attempt_at=now if exhausted else next_at,
    )
    logger.info(
        "delivery %s of %s to %s failed (%s, attempt %d)%s",
        delivery.event_id,
        delivery.event_type,
        delivery.target,
        line,
        failures,
        ": exhausted" if exhausted else "",
    )
    if subscriber is not None:
        _subscriber_failed(subscriber, now, line)


def _http_send(
    delivery: Delivery, subscriber: Subscriber, session: requests.Session, now: datetime
) -> tuple[int | None, str | None]:
    body = event_body(
        event_type=delivery.event_type, created_at=delivery.created_at, data=delivery.data
    )
    try:
        secret = subscriber.secret
        if not isinstance(secret, str) or not secret:
            return None, "no secret"
        previous = subscriber.previous_secret
        until = subscriber.previous_secret_until
        also = [previous] if isinstance(previous, str) and until and until > now else []
        headers = headers_sign(
            secret=secret, event_id=delivery.event_id, body=body, at=now, also=also
        )
    except Exception as err:  # a secret that cannot be read or used: said by class only
        return None, f"signing failed: {type(err).__name__}"
    headers["Content-Type"] = "application/json"
    if not allow_private() and not subscriber.url.lower().startswith("https://"):
        return None, HTTP_REFUSED_LINE
    try:
        # stream=True: the answer's body is never read, only its status.
        response = session.post(
            subscriber.url,
            data=body.encode(),
            headers=headers,
            timeout=settings.SIBLING_OUTBOUND_TIMEOUT_S,
            allow_redirects=False,
            stream=True,
        )
    except requests.RequestException as err:
        if PRIVATE_REFUSED in str(err):
            return None, PRIVATE_REFUSED
        return None, type(err).__name__
    except Exception as err:  # an unusable URL, say; never raised into the worker
        return None, type(err).__name__
    status = response.status_code
    response.close()
    return status, None


def _handler_run(delivery: Delivery) -> str | None:
    registration = registry.handler_named(delivery.event_type, delivery.handler)
    if registration is None:
        return f"no handler registered as {delivery.handler}"[:STATUS_LINE_MAX]
    try:
        registration.handler(event_document(delivery))
    except Exception as err:
        logger.exception("handler %s failed on %s", delivery.handler, delivery.event_id)
        return f"handler raised {type(err).__name__}"
    return None


def _delivered(
    delivery: Delivery, subscriber: Subscriber | None, status: int | None, now: datetime
) -> None:
    Delivery.objects.filter(pk=delivery.pk).update(
        state=State.DELIVERED,
        attempts=delivery.attempts + 1,
        last_attempt_at=now,
        last_status=status,
        last_error="",
        claimed_until=None,
        delivered_at=now,
        expires_at=now + timedelta(days=settings.SIBLING_OUTBOUND_RETENTION_DAYS),
    )
    if subscriber is not None:
        Subscriber.objects.filter(pk=subscriber.pk).update(failing_since=None, last_success_at=now)
        subscriber.failing_since = None


def _subscriber_failed(subscriber: Subscriber, now: datetime, line: str) -> None:
    Subscriber.objects.filter(pk=subscriber.pk, failing_since=None).update(failing_since=now)
    since = Subscriber.objects.filter(pk=subscriber.pk).values_list("failing_since", flat=True)
    failing_since = since.first() or now
    subscriber.failing_since = failing_since
    if now - failing_since >= timedelta(seconds=settings.SIBLING_OUTBOUND_PAUSE_AFTER_S):
        subscriber_pause(
            subscriber,
            reason=(
                f"Every delivery has failed since {failing_since:%Y-%m-%d %H:%M} UTC "
                f"(the last: {line})."
            )[:300],
        )


def _park(subscriber: Subscriber) -> None:
    # A scan of the deliveries on the embedded server (no index holds both fields), made only
    # when a subscriber is paused or resumed; the workers park one person's queue at a time.
    Delivery.objects.filter(subscriber=subscriber, state__in=[State.PENDING, State.FAILED]).update(
        next_attempt_at=PARKED_UNTIL
    )


def subscriber_pause(subscriber: Subscriber, *, reason: str) -> None:
    """Stop sending to the subscriber; its deliveries wait (parked) until it is resumed."""
    now = timezone.now()
    Subscriber.objects.filter(pk=subscriber.pk).update(
        active=False, paused_reason=reason[:300], paused_at=now
    )
    subscriber.active, subscriber.paused_reason, subscriber.paused_at = False, reason, now
    _park(subscriber)
    logger.warning("subscriber %s paused: %s", subscriber.pk, reason)


ROTATION_OVERLAP = timedelta(days=1)


def subscriber_secret_rotate(subscriber: Subscriber) -> str:
    """A new secret for the subscriber (returned, to be shown once). The one before keeps
    signing beside it for ``ROTATION_OVERLAP``, so the endpoint switches without a refusal."""
    new = secret_generate()
    current = Subscriber.objects.get(pk=subscriber.pk)
    current.previous_secret = current.secret
    current.previous_secret_until = timezone.now() + ROTATION_OVERLAP
    current.secret = new
    current.save(update_fields=["secret", "previous_secret", "previous_secret_until"])
    return new


def subscriber_resume(subscriber: Subscriber) -> int:
    """Send to the subscriber again; what waited goes now, in order. The number waiting."""
    now = timezone.now()
    Subscriber.objects.filter(pk=subscriber.pk).update(
        active=True, paused_reason="", paused_at=None, failing_since=None
    )
    subscriber.active, subscriber.paused_reason, subscriber.paused_at = True, "", None
    waiting = Delivery.objects.filter(
        subscriber=subscriber, state__in=[State.PENDING, State.FAILED]
    ).update(next_attempt_at=now)
    return waiting


def deliveries_replay(deliveries: QuerySet[Delivery] | Iterable[Delivery]) -> int:
    """Send these deliveries again (not one being sent right now), with their original event id
    (receivers deduplicate by it) and a new retry window. The number queued."""
    now = timezone.now()
    replayed = 0
    for delivery in deliveries:
        replayed += Delivery.objects.filter(
            pk=delivery.pk,
            state__in=[State.FAILED, State.EXHAUSTED, State.DELIVERED, State.PENDING],
        ).update(
            state=State.PENDING,
            next_attempt_at=now,
            retry_until=now + timedelta(seconds=settings.SIBLING_OUTBOUND_MAX_AGE_S),
            claimed_until=None,
            expires_at=None,
            replayed_at=now,
            replays=delivery.replays + 1,
        )
    return replayed
