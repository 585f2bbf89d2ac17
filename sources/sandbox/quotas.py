"""Providers' quotas, enforced by the sandbox the way each provider enforces them.

An imitation declares its quotas in its sandbox module (see sources.sandbox.registry):

- `quotas`: a sequence of `Quota`, or a function returning one (read on every request, for
  quotas that depend on settings);
- `quota_caller(request) -> QuotaCaller | None`: whose quotas a request spends, the account its
  credential belongs to and the application (OAuth client, API client) that holds it; None
  (no or an unknown credential) charges nothing, and the view answers as it does.

Every route of the imitation is wrapped (`quota_view`, by sources.sandbox.urls), so a request
that the imitation answers by calling its own views (a batch) is charged once per part. Before
the view runs, each quota the route counts toward is charged its cost; if that takes a quota's
window over its limit, the charges are taken back and the quota's `answer` (the provider's own
over-limit response, status, body and headers) is sent instead: a refused call is not charged.

Windows. A sliding window (the default) never lets the units charged to one key in any
`window_s` consecutive slots exceed `limit`; slots are one second for windows up to a minute
(`ceil(window_s / 60)` seconds beyond). An `aligned` window is fixed to the clock (quarter
hours, the UTC day): units charged from its start. Counts live in MongoDB (`QuotaSlot`,
one document per quota key holding its slots, charged with one atomic `$inc`), so every worker
answering as the sandbox shares them. Charging first and checking after means two racing
requests may both be refused at the very edge, never both admitted over it.

`settings.SIBLING_SANDBOX_QUOTAS`, read on every request: "on" (the default), "off", or limits
overridden as "<provider id or family>.<quota name>=<limit>,..." (quotas on): "<id>.user=100000"
for one provider's quota named "user", "google.user=300" for every Google provider's.
"""

from __future__ import annotations

import functools
import hashlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from types import ModuleType
from typing import Any, Literal

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connections, router
from django.http import HttpRequest, HttpResponse
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from .models import QuotaSlot

SETTING = "SIBLING_SANDBOX_QUOTAS"
# A sliding window is summed over at most this many slots.
SLOTS_PER_WINDOW = 60


@dataclass(frozen=True)
class QuotaCaller:
    """Whose quotas a request spends: `account` (per="account") and `app` (per="app")."""

    account: str
    app: str = ""


@dataclass(frozen=True)
class Quota:
    """One limit of a provider, as the provider enforces it.

    `per`: "account" (each account the credential belongs to: a Google user, a bank Item) or
    "app" (the OAuth or API client, shared by every account). `costs`: units per route name
    (the URL pattern's name), `default_cost` for the others; `routes`, when given, are the only
    routes that count. `answer(quota)` is the provider's over-limit response.
    """

    name: str
    per: Literal["account", "app"]
    limit: int
    window_s: int
    answer: Callable[[Quota], HttpResponse]
    costs: Mapping[str, int] = field(default_factory=dict)
    default_cost: int = 1
    routes: frozenset[str] | None = None
    aligned: bool = False

    def cost(self, route: str) -> int:
        """Units a call of `route` spends (0: the route does not count)."""
        if self.routes is not None and route not in self.routes:
            return 0
        return int(self.costs.get(route, self.default_cost))


# --- The setting ----------------------------------------------------------------------------------


@lru_cache(maxsize=32)
def quota_overrides(value: str) -> dict[tuple[str, str], int] | None:
    """None when quotas are off; else {(provider id or family, quota name): limit}.

    Raises ImproperlyConfigured, naming the setting, for a malformed value.
    """
    text = (value or "").strip()
    if text.lower() == "off":
        return None
    if text.lower() in ("", "on"):
        return {}
    overrides: dict[tuple[str, str], int] = {}
    for entry in text.split(","):
        target, sep, number = (part.strip() for part in entry.partition("="))
        space, dot, name = target.partition(".")
        if not (sep and dot and space and name and number.isdigit()):
            raise ImproperlyConfigured(
                f"{SETTING}: {entry.strip()!r} must be <provider or family>.<quota>=<limit>; "
                'or the whole value "on" or "off"'
            )
        overrides[(space, name)] = int(number)
    return overrides


def quotas_setting() -> dict[tuple[str, str], int] | None:
    return quota_overrides(str(getattr(settings, SETTING, "on")))


def module_quotas(module: ModuleType) -> list[Quota]:
    """An imitation's declared quotas (none when it declares none)."""
    declared = getattr(module, "quotas", ())
    if callable(declared):
        declared = declared()
    return list(declared)


def quotas_check(modules: Mapping[str, ModuleType], families: Mapping[str, str | None]) -> None:
    """Raise ImproperlyConfigured for a malformed setting, or one naming a quota nobody has."""
    overrides = quotas_setting()
    if not overrides:
        return
    known = set()
    for provider_id, module in modules.items():
        for quota in module_quotas(module):
            known.add((provider_id, quota.name))
            if families.get(provider_id):
                known.add((families[provider_id], quota.name))
    unknown = sorted(f"{space}.{name}" for space, name in overrides if (space, name) not in known)
    if unknown:
        choices = ", ".join(sorted(f"{space}.{name}" for space, name in known))
        raise ImproperlyConfigured(
            f"{SETTING}: no such quota {', '.join(unknown)}; the quotas are {choices}"
        )


def quota_limit(
    quota: Quota,
    provider_id: str,
    family: str | None,
    overrides: Mapping[tuple[str, str], int],
) -> int:
    """The quota's limit: the provider's own override, else its family's, else the declared."""
    for space in (provider_id, family):
        if space and (space, quota.name) in overrides:
            return overrides[(space, quota.name)]
    return quota.limit


# --- Counting -------------------------------------------------------------------------------------


def _collection() -> Any:
    alias = router.db_for_write(QuotaSlot)
    return connections[alias].get_collection(QuotaSlot._meta.db_table)


def slot_seconds(quota: Quota) -> int:
    if quota.aligned:
        return quota.window_s
    return max(1, math.ceil(quota.window_s / SLOTS_PER_WINDOW))


def _window(quota: Quota, now: float) -> tuple[int, int]:
    """(current slot, number of slots a window sums)."""
    size = slot_seconds(quota)
    return int(now // size), 1 if quota.aligned else math.ceil(quota.window_s / size)


def _key_id(provider_id: str, quota: Quota, key: str) -> str:
    # The key is hashed: an account or client id is not stored, and any length fits.
    hashed = hashlib.sha256(key.encode()).hexdigest()[:32]
    return f"{provider_id}|{quota.name}|{hashed}"


def _in_window(document: dict | None, slot: int, slots: int) -> tuple[int, list[str]]:
    """(units charged in the window ending at `slot`, the stored slots older than it)."""
    total, stale = 0, []
    for name, units in ((document or {}).get("slots") or {}).items():
        number = int(name)
        if number > slot - slots:
            total += int(units) if number <= slot else 0
        else:
            stale.append(name)
    return total, stale


def quota_charge(
    provider_id: str, quota: Quota, key: str, units: int, limit: int, *, now: float | None = None
) -> tuple[str, str] | None:
    """Charge `units` to the key's window, in one atomic update of the key's document: the
    (document, slot field) charged, or None (and nothing charged) when that would take the
    window over `limit`.

    The update returns the document as it stands with this charge, so of racing calls the
    later one sees the earlier ones: the window can be refused at the edge, never overrun.
    """
    now = time.time() if now is None else now
    slot, slots = _window(quota, now)
    size = slot_seconds(quota)
    key_id = _key_id(provider_id, quota, key)
    field_name = f"slots.{slot}"
    # The document lives as long as a window can still read its newest slot.
    expires = datetime.fromtimestamp((slot + slots + 1) * size, UTC)
    collection = _collection()
    stored = None
    for _attempt in range(5):  # two first charges of a key may both try to insert it
        try:
            stored = collection.find_one_and_update(
                {"_id": key_id},
                {"$inc": {field_name: units}, "$max": {"expires_at": expires}},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            continue
        if stored is None:
            # An upsert racing another may come back without the document: read it (it holds
            # this charge, and perhaps later ones, which can only make the check stricter).
            stored = collection.find_one({"_id": key_id})
        break
    if stored is None:
        raise RuntimeError("could not count the quota's units")
    used, stale = _in_window(stored, slot, slots)
    if len(stale) > SLOTS_PER_WINDOW:
        # Slots no window reads any more, dropped now and then rather than on every call.
        collection.update_one({"_id": key_id}, {"$unset": {f"slots.{n}": "" for n in stale}})
    if used > limit:
        collection.update_one({"_id": key_id}, {"$inc": {field_name: -units}})
        return None
    return key_id, field_name


def quota_used(provider_id: str, quota: Quota, key: str, *, now: float | None = None) -> int:
    """Units charged to the key in its current window (for tests and provider headers)."""
    now = time.time() if now is None else now
    slot, slots = _window(quota, now)
    document = _collection().find_one({"_id": _key_id(provider_id, quota, key)})
    return _in_window(document, slot, slots)[0]


# --- The wrapper ----------------------------------------------------------------------------------


def quota_view(
    view: Callable[..., HttpResponse],
    *,
    module: ModuleType,
    provider_id: str,
    family: str | None,
    route: str,
) -> Callable[..., HttpResponse]:
    """`view`, answered only while the caller's quotas allow (see the module docstring)."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        overrides = quotas_setting()
        if overrides is None:
            return view(request, *args, **kwargs)
        counted = [(q, q.cost(route)) for q in module_quotas(module)]
        counted = [(q, units) for q, units in counted if units > 0]
        caller_of = getattr(module, "quota_caller", None)
        if not counted or caller_of is None:
            return view(request, *args, **kwargs)
        caller = caller_of(request)
        if caller is None:
            return view(request, *args, **kwargs)
        charged: list[tuple[str, str, int]] = []
        for quota, units in counted:
            key = caller.account if quota.per == "account" else caller.app
            if not key:
                continue
            limit = quota_limit(quota, provider_id, family, overrides)
            charge = quota_charge(provider_id, quota, key, units, limit)
            if charge is None:
                quotas_refund(charged)
                return quota.answer(quota)
            charged.append((*charge, units))
        return view(request, *args, **kwargs)

    wrapped.sandbox_quota_wrapped = True  # type: ignore[attr-defined]
    return wrapped


def quotas_refund(charged: Sequence[tuple[str, str, int]]) -> None:
    """Take back the charges (document, slot field, units) of a call another quota refused."""
    collection = _collection()
    for key_id, field_name, units in charged:
        collection.update_one({"_id": key_id}, {"$inc": {field_name: -units}})
