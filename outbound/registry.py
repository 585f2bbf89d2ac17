"""In-process subscribers: Sibling's own modules receive the same events without HTTP.

A module registers a handler for an event type when it is imported (its AppConfig.ready)::

    from outbound import registry

    @registry.on("records.changed", categories=("behavioral",))
    def behaviour_changed(event: dict) -> None:
        ...  # event = {"id": "msg_...", "type": ..., "timestamp": ..., "data": {...}}

Handlers are never called where the event happens (a sync, a request): each event becomes a
delivery per handler, run by a worker with the same order and retry rules as an HTTPS
subscriber's (an exception is a failed attempt). A handler must therefore be idempotent: the
same event id may come twice. It is known by its name (``module.qualname`` unless given), which
is what the stored delivery names: renaming a handler leaves its pending deliveries failing
until they are exhausted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from outbound.models import EVENT_TYPES

Handler = Callable[[dict[str, Any]], Any]


@dataclass(frozen=True)
class Registration:
    name: str
    event_type: str
    handler: Handler
    categories: frozenset[str]  # empty: every category


_registrations: dict[tuple[str, str], Registration] = {}


def subscribe(
    event_type: str,
    handler: Handler,
    *,
    name: str | None = None,
    categories: Iterable[str] = (),
) -> Registration:
    """Have ``handler(event)`` run by a worker for every event of ``event_type`` (of one of
    ``categories`` when given). Registering the same name twice replaces the first."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}; known: {', '.join(EVENT_TYPES)}")
    name = name or f"{handler.__module__}.{handler.__qualname__}"
    registration = Registration(name, event_type, handler, frozenset(categories))
    _registrations[(event_type, name)] = registration
    return registration


def on(event_type: str, *, name: str | None = None, categories: Iterable[str] = ()) -> Callable:
    """Decorator form of :func:`subscribe`."""

    def register(handler: Handler) -> Handler:
        subscribe(event_type, handler, name=name, categories=categories)
        return handler

    return register


def unsubscribe(event_type: str, name: str) -> None:
    _registrations.pop((event_type, name), None)


def handlers_for(event_type: str, categories: frozenset[str]) -> list[Registration]:
    """The handlers that want an event of this type concerning these categories (an event
    concerning none, such as person.erased, goes to every handler of its type)."""
    return [
        registration
        for (registered_type, _), registration in _registrations.items()
        if registered_type == event_type
        and (not registration.categories or not categories or registration.categories & categories)
    ]


def handler_named(event_type: str, name: str) -> Registration | None:
    return _registrations.get((event_type, name))
