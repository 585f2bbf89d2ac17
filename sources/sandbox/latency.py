"""A real provider's round trip, imitated: every answer of the sandbox waits `latency ± jitter`.

Real providers answer in 50 to 300 ms; the sandbox on the same machine answers in about one.
`settings.SIBLING_SANDBOX_LATENCY_MS` chooses the delay, read on every request (so tests can
override it):

- "0" (the default): no delay;
- a number of milliseconds for every provider: "100";
- per provider id or family, `*` for everything else: "<id>=100,google=80,<id>=50,*=100"
  (a provider's own entry wins over its family's, which wins over `*`; with no `*`, others wait
  nothing).

`settings.SIBLING_SANDBOX_LATENCY_JITTER` (default 0.2) spreads each delay uniformly over
`delay * (1 ± jitter)`. One HTTP request is one round trip: a request the sandbox answers by
calling its own views (a batch) waits once, not once per part (`latency_view`, which
sources.sandbox.urls wraps around every route, waits only in the outermost one).
"""

from __future__ import annotations

import contextvars
import functools
import random
import time
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse

SETTING = "SIBLING_SANDBOX_LATENCY_MS"
JITTER_SETTING = "SIBLING_SANDBOX_LATENCY_JITTER"
OTHERS = "*"
# Beyond this a "latency" is a misconfiguration (a client's read timeout is 30 s).
MAX_MS = 10_000.0


def _milliseconds(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= MAX_MS:
        raise ImproperlyConfigured(
            f"{SETTING}: {where!r} is not a number of milliseconds from 0 to {MAX_MS:g}"
        )
    return value


@lru_cache(maxsize=32)
def latency_table(value: str) -> dict[str, float]:
    """{provider id, family or `*`: milliseconds} for a value of SIBLING_SANDBOX_LATENCY_MS.

    Raises ImproperlyConfigured naming the setting for anything else.
    """
    text = (value or "").strip()
    if not text:
        return {}
    if "=" not in text:
        return {OTHERS: _milliseconds(text, text)}
    table: dict[str, float] = {}
    for entry in text.split(","):
        name, sep, number = (part.strip() for part in entry.partition("="))
        if not sep or not name or name in table:
            raise ImproperlyConfigured(
                f"{SETTING}: {entry.strip()!r} must be <provider or family or *>=<milliseconds>, "
                "each name once"
            )
        table[name] = _milliseconds(number, entry.strip())
    return table


def latency_ms(names: Sequence[str], value: str | None = None) -> float:
    """The configured delay for a route of `names` (most specific first, e.g. (id, family)),
    before jitter."""
    table = latency_table(getattr(settings, SETTING, "0") if value is None else value)
    for name in (*names, OTHERS):
        if name in table:
            return table[name]
    return 0.0


def jitter_fraction(value: float | None = None) -> float:
    fraction = float(getattr(settings, JITTER_SETTING, 0.2) if value is None else value)
    if not 0 <= fraction <= 1:
        raise ImproperlyConfigured(f"{JITTER_SETTING} must be a fraction from 0 to 1")
    return fraction


def latency_delay_s(
    names: Sequence[str], *, rng: random.Random | None = None, value: str | None = None
) -> float:
    """Seconds to wait before answering a request to a route of `names`: the configured delay
    spread uniformly by the jitter (0 when no delay is configured for them)."""
    base_ms = latency_ms(names, value)
    if base_ms <= 0:
        return 0.0
    spread = jitter_fraction()
    factor = (rng or random).uniform(1 - spread, 1 + spread)
    return base_ms * factor / 1000.0


def latency_check() -> None:
    """Raise ImproperlyConfigured for a malformed setting (called when the sandbox is mounted)."""
    latency_table(getattr(settings, SETTING, "0"))
    jitter_fraction()


# Set while a sandbox view answers: a view called from inside another (a batch's part) is the
# same round trip and does not wait again.
_answering: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "sandbox_answering", default=False
)


def latency_view(
    view: Callable[..., HttpResponse],
    names: Sequence[str],
    *,
    sleep: Callable[[float], Any] | None = None,
) -> Callable[..., HttpResponse]:
    """`view`, answering after the round trip configured for `names` (provider id, family).

    The wait comes after the view has run, as the network's return leg: the provider (and its
    quota count) sees the request when the client sent it. `sleep` defaults to `time.sleep`,
    looked up on each request (tests replace this module's `time`).
    """
    names = tuple(names)

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if _answering.get():
            return view(request, *args, **kwargs)
        token = _answering.set(True)
        try:
            response = view(request, *args, **kwargs)
        finally:
            _answering.reset(token)
        delay = latency_delay_s(names)
        if delay > 0:
            (sleep or time.sleep)(delay)
        return response

    return wrapped
