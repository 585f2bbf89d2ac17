"""Emitting events: where something happens (a sync's end, an events batch, a connection's
change, an erasure), the event is stored for its subscribers, and nothing more.

Emission costs, at most, one read of the person's pseudonymous id and one insert (a row per
subscriber and handler that wants the event, in one command), plus a request to the workers
made at most every ``KICK_THROTTLE_S`` per process. When nobody wants the event it costs
nothing at all: the subscribers are known from a per-process copy refreshed every
``SUBSCRIBERS_CACHE_S`` (at once in the process that changed one). It never calls the network
and never raises into its caller: a failure is logged and the event is lost, the one thing that
must not stop ingestion.

Payloads carry ids and counts, never a personal value: the person's ``public_id``, the provider,
kinds, counts, the span of ``occurred_at`` covered, run and connection ids.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.utils import timezone
from django_q.conf import Conf
from django_q.tasks import async_task

from outbound import registry
from outbound.models import (
    CONNECTION_CREATED,
    CONNECTION_DISCONNECTED,
    CONNECTION_REAUTH_REQUIRED,
    PERSON_ERASED,
    RECORDS_CHANGED,
    Delivery,
    Subscriber,
)
from outbound.signing import event_id_new, timestamp_text

logger = logging.getLogger(__name__)

SUBSCRIBERS_CACHE_S = 5.0
KICK_THROTTLE_S = 0.2

_cache_lock = threading.Lock()
_cache: tuple[float, list[tuple[Any, frozenset[str], frozenset[str]]]] | None = None
_kicked_at = 0.0


@receiver(post_save, sender=Subscriber)
@receiver(post_delete, sender=Subscriber)
def _subscribers_changed(**kwargs: Any) -> None:
    subscribers_forget()


def subscribers_forget() -> None:
    global _cache
    with _cache_lock:
        _cache = None


def _subscribers() -> list[tuple[Any, frozenset[str], frozenset[str]]]:
    """(id, event types, categories) of every subscriber, paused ones included: events owed
    to a paused subscriber wait for it to be resumed."""
    global _cache
    now = time.monotonic()
    with _cache_lock:
        if _cache is not None and now - _cache[0] < SUBSCRIBERS_CACHE_S:
            return _cache[1]
    rows = [
        (pk, frozenset(types or ()), frozenset(categories or ()))
        for pk, types, categories in Subscriber.objects.values_list(
            "pk", "event_types", "categories"
        )
    ]
    with _cache_lock:
        _cache = (now, rows)
    return rows


def _targets(event_type: str, categories: frozenset[str]) -> list[dict[str, Any]]:
    targets: list[dict[str, Any]] = [
        {"target": f"s:{pk}", "subscriber_id": pk}
        for pk, types, wanted in _subscribers()
        if event_type in types and (not categories or not wanted or wanted & categories)
    ]
    targets += [
        {"target": f"h:{registration.name}", "handler": registration.name}
        for registration in registry.handlers_for(event_type, categories)
    ]
    return targets


def event_emit(
    *,
    event_type: str,
    data: dict[str, Any],
    person: str | None = None,
    person_of_user: Any = None,
    categories: Iterable[str] = (),
) -> str | None:
    """Store an event for every subscriber and handler that wants it; its id, or None when
    nobody does. ``person`` is the public id, or ``person_of_user`` a user (or id) whose public
    id is looked up only if someone wants the event. Never raises."""
    try:
        return _event_emit(
            event_type=event_type,
            data=data,
            person=person,
            person_of_user=person_of_user,
            categories=frozenset(categories),
        )
    except Exception:
        logger.exception("change notification %s not stored", event_type)
        return None


def _event_emit(
    *,
    event_type: str,
    data: dict[str, Any],
    person: str | None,
    person_of_user: Any,
    categories: frozenset[str],
) -> str | None:
    targets = _targets(event_type, categories)
    if not targets:
        return None
    if person is None and person_of_user is not None:
        person = _public_id(person_of_user)
        if person is None:  # the person is gone (erased meanwhile): nothing to tell about them
            return None
    event_id = event_id_new()
    now = timezone.now()
    retry_until = now + timedelta(seconds=settings.SIBLING_OUTBOUND_MAX_AGE_S)
    body = {"person": person, **data} if person is not None else dict(data)
    Delivery.objects.bulk_create(
        [
            Delivery(
                event_id=event_id,
                event_type=event_type,
                person=person or "",
                data=body,
                created_at=now,
                next_attempt_at=now,
                retry_until=retry_until,
                **target,
            )
            for target in targets
        ]
    )
    workers_kick()
    return event_id


def _public_id(user: Any) -> str | None:
    """The person's public id (their Person row made if needed), or None if the account is
    gone: a row is never made for an erased person."""
    from django.contrib.auth import get_user_model

    from sibling.models import Person
    from sibling.people import person_of

    user_id = getattr(user, "pk", user)
    public_id = Person.objects.filter(user_id=user_id).values_list("public_id", flat=True).first()
    if public_id is not None:
        return public_id
    if not get_user_model().objects.filter(pk=user_id).exists():
        return None
    return person_of(user_id).public_id


def workers_kick() -> None:
    """Ask the workers to send soon. The stored deliveries are the queue (a minutely task
    sends whatever a throttled request left), so a burst of events costs one queued task per
    ``KICK_THROTTLE_S``, not one each. With the queue run in-process (tests), nothing is sent
    from here: sending is a worker's job, and tests run it as one."""
    global _kicked_at
    if Conf.SYNC:
        return
    now = time.monotonic()
    if now - _kicked_at < KICK_THROTTLE_S:
        return
    _kicked_at = now
    from sibling.queue import broker

    async_task("outbound.tasks.deliveries_send", task_name="outbound-send", broker=broker())


# --- The events -------------------------------------------------------------------------------


def _moment(value: datetime | None) -> str | None:
    return timestamp_text(value) if value is not None else None


def records_changed_emit(
    *,
    user_id: Any,
    provider: str,
    counts: Any,
    run_id: Any = None,
    connection_id: Any = None,
) -> str | None:
    """``records.changed`` for what one sync run, or one events batch, stored for a person
    (``counts``: an ``ingestion.storage.StoreCounts``). Nothing when it changed nothing."""
    try:
        if not (counts.created or counts.updated or counts.deleted):
            return None
        from ingestion.schemas import kind_get

        categories = set()
        for kind in counts.kinds:
            try:
                categories.add(kind_get(kind).category)
            except (KeyError, ValueError, LookupError):
                continue
        data = {
            "provider": provider,
            "kinds": sorted(counts.kinds),
            "counts": {
                "created": counts.created,
                "updated": counts.updated,
                "deleted": counts.deleted,
            },
            "range": {
                "from": _moment(counts.occurred_from),
                "to": _moment(counts.occurred_to),
            },
            "run": str(run_id) if run_id is not None else None,
            "connection": str(connection_id) if connection_id is not None else None,
        }
    except Exception:
        logger.exception("change notification %s not stored", RECORDS_CHANGED)
        return None
    return event_emit(
        event_type=RECORDS_CHANGED, data=data, person_of_user=user_id, categories=categories
    )


CONNECTION_EVENTS = {
    "created": CONNECTION_CREATED,
    "reauth_required": CONNECTION_REAUTH_REQUIRED,
    "disconnected": CONNECTION_DISCONNECTED,
}


def connection_event_emit(*, connection: Any, change: str) -> str | None:
    """``connection.created``, ``.reauth_required`` or ``.disconnected`` for a connection's
    change (``sources.signals``' names); other changes are not events here."""
    event_type = CONNECTION_EVENTS.get(change)
    if event_type is None:
        return None
    try:
        category = connection.provider_class.category
    except Exception:
        category = None
    return event_emit(
        event_type=event_type,
        data={"provider": connection.provider, "connection": str(connection.pk)},
        person_of_user=connection.user_id,
        categories=(category,) if category else (),
    )


def person_erased_emit(*, public_id: str) -> str | None:
    """``person.erased``: everything Sibling held about this person is gone; subscribers drop
    what they derived from it."""
    return event_emit(event_type=PERSON_ERASED, data={}, person=public_id)
