"""Provider budgets: run at a provider's quota, never over it.

Each provider declares its quotas (``sources.providers.base.Budget``). A sync's session charges
them before every attempt of every call (``ingestion.http.CallBudget``); each budget is a token
bucket kept in MongoDB (``ingestion.models.BudgetBucket``), one per connected account or one for
the application, changed only by compare-and-set on its ``version``, so every thread, worker
process and host shares it.

The bucket (a budget of ``limit`` units per ``window_s`` seconds): capacity
``C = max(SIBLING_BUDGET_BURST * limit, the largest single charge)`` and refill rate
``(limit - C) / window_s``. In any window it grants at most ``C + (limit - C) = limit`` units,
whether the provider counts over a sliding window or a fixed one; a steady sync runs at
``(limit - C) / limit`` of the quota. A charge takes its units at once (the level may go below
zero: the units are reserved) and waits until the level it left is back to zero; that keeps
callers in order and costs one write per budget. When that wait would exceed
``SIBLING_BUDGET_MAX_WAIT_S`` nothing is taken and ``Deferred`` says when the units will be
there: the runner keeps the pages and cursor stored so far and syncs again then.

Aligned budgets (``Budget.aligned``: the provider resets its counter at clock-aligned
boundaries) hold ``limit`` units per aligned window instead, refilled whole at each boundary.

What the provider says corrects the buckets (``observe``): a ``Retry-After`` on a 429 or 403
empties the account's buckets (the application's when the provider has no per-account budget)
until then; usage a provider reports (``Provider.budget_remaining``) lowers a bucket to what
remains.

``SIBLING_BUDGETS`` off: no session charges anything (the tests' default).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import requests
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from ingestion.errors import Deferred, PermanentError
from sibling import mongo
from sources.providers.base import Budget, Provider

# Compare-and-set attempts before giving up: each failure means another caller's update went
# through, so this many in a row means something is wrong, not busy.
MAX_CAS_ATTEMPTS = 200


def _collection() -> Collection:
    from ingestion.models import BudgetBucket

    return mongo.plain_database()[BudgetBucket._meta.db_table]


def _now() -> float:
    # timezone.now, not time.time: tests that move the clock move the budgets with it.
    return timezone.now().timestamp()


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


def _hashed(value: str) -> str:
    # Account and client ids identify people or Sibling's project: only their hash is kept.
    return hashlib.sha256(value.encode()).hexdigest()[:24]


def budgets_in_force(provider: type[Provider]) -> tuple[Budget, ...]:
    """The provider's budgets with the limits settings give (``<ID>_BUDGET_<NAME>``)."""
    result = []
    for budget in provider.budgets_declared():
        override = getattr(settings, f"{provider.id.upper()}_BUDGET_{budget.name.upper()}", None)
        if override is not None:
            limit = int(override)
            if limit <= 0:
                raise ImproperlyConfigured(
                    f"{provider.id.upper()}_BUDGET_{budget.name.upper()} must be positive"
                )
            budget = replace(budget, limit=limit)
        result.append(budget)
    return tuple(result)


def aligned_start(now: float, window_s: int) -> float:
    """The start of the clock-aligned window holding ``now`` (UTC: the epoch is midnight)."""
    return math.floor(now / window_s) * window_s


@dataclass
class Grant:
    """What one bucket did with a charge: the seconds to wait before the call (0: none)."""

    wait_s: float
    at: float  # when the units count as spent (epoch seconds): the call goes then


class Bucket:
    """One bucket of one budget: ``key`` names the account (or the application) it counts."""

    def __init__(self, provider: type[Provider], budget: Budget, key: str) -> None:
        self.provider = provider
        self.budget = budget
        self.key = f"{provider.id}:{budget.name}:{budget.per}:{_hashed(key)}"

    def capacity(self, units: float, stored: float) -> float:
        """``max(burst * limit, the largest single charge)``: what was stored is kept (a
        batch seen before), within the limit in force (a setting may have lowered it)."""
        burst = float(getattr(settings, "SIBLING_BUDGET_BURST", 0.05))
        return max(burst * self.budget.limit, float(units), min(stored, self.budget.limit), 1.0)

    def rate(self, capacity: float) -> float:
        # Capacity reaching the limit (a single charge as big as the whole quota) still refills.
        return max(self.budget.limit - capacity, 1.0) / self.budget.window_s

    def level(self, doc: dict[str, Any], now: float, capacity: float) -> tuple[float, float]:
        """(level, as of) at ``now``: never earlier than the stored stamp, so updates made
        with slightly different clocks never run the bucket backwards."""
        if self.budget.aligned:
            start = aligned_start(now, self.budget.window_s)
            if start > doc["stamp"]:
                return float(self.budget.limit), start
            return float(doc["tokens"]), float(doc["stamp"])
        at = max(now, float(doc["stamp"]))
        refill = (at - float(doc["stamp"])) * self.rate(capacity)
        return min(capacity, float(doc["tokens"]) + refill), at

    def _doc(self, now: float) -> dict[str, Any]:
        collection = _collection()
        doc = collection.find_one({"key": self.key})
        if doc is not None:
            return doc
        fresh = {
            "key": self.key,
            "provider": self.provider.id,
            "budget": self.budget.name,
            "per": self.budget.per,
            # A new bucket starts full: the provider's window holds nothing of ours yet.
            "tokens": float(self.budget.limit) if self.budget.aligned else 0.0,
            "stamp": aligned_start(now, self.budget.window_s) if self.budget.aligned else 0.0,
            "capacity": 0.0,
            "blocked_until": 0.0,
            "version": 0,
            "units": 0,
            "waits": 0,
            "wait_s": 0.0,
            "deferrals": 0,
            "rate_limited": 0,
            "updated_at": timezone.now(),
        }
        if not self.budget.aligned:
            fresh["capacity"] = self.capacity(0, 0.0)
            fresh["tokens"] = fresh["capacity"]
            fresh["stamp"] = now
        try:
            collection.insert_one(fresh)
        except DuplicateKeyError:
            pass  # another caller created it first
        return collection.find_one({"key": self.key})

    def update(self, change: Callable[[dict[str, Any], float], tuple[dict, dict, Any]]) -> Any:
        """Apply ``change(doc, now) -> ($set, $inc, result)`` by compare-and-set; its result.
        ``change`` raising leaves the bucket as it was."""
        collection = _collection()
        for _attempt in range(MAX_CAS_ATTEMPTS):
            now = _now()
            doc = self._doc(now)
            sets, incs, result = change(doc, now)
            if not sets and not incs:
                return result
            done = collection.update_one(
                {"_id": doc["_id"], "version": doc["version"]},
                {
                    "$set": {**sets, "updated_at": timezone.now()},
                    "$inc": {**incs, "version": 1},
                },
            )
            if done.modified_count:
                return result
        raise PermanentError(f"The {self.budget.name} budget is too contended to update")

    # --- Charging ----------------------------------------------------------------------------

    def take(self, units: int, max_wait_s: float) -> Grant:
        """Take ``units`` now, to be spent after the returned wait; ``Deferred`` (nothing
        taken) when that wait would exceed ``max_wait_s``."""

        def change(doc: dict[str, Any], now: float) -> tuple[dict, dict, Any]:
            blocked = float(doc.get("blocked_until") or 0.0)
            if blocked - now > max_wait_s:
                return {}, {"deferrals": 1}, self._deferral(blocked)
            if self.budget.aligned:
                return self._take_aligned(doc, now, units, max_wait_s, blocked)
            capacity = self.capacity(units, float(doc.get("capacity") or 0.0))
            level, at = self.level(doc, now, capacity)
            left = level - units
            start = max(at, blocked)
            ready = start + max(0.0, -left) / self.rate(capacity)
            wait = ready - now
            if wait > max_wait_s:
                return {}, {"deferrals": 1}, self._deferral(ready)
            sets = {"tokens": left, "stamp": at, "capacity": capacity}
            incs: dict[str, Any] = {"units": units}
            if wait > 0:
                incs.update(waits=1, wait_s=wait)
            return sets, incs, Grant(max(0.0, wait), max(now, ready))

        return self._raise(self.update(change))

    def _take_aligned(
        self, doc: dict[str, Any], now: float, units: int, max_wait_s: float, blocked: float
    ) -> tuple[dict, dict, Any]:
        # The earliest the units can count: after a block, and in the window the bucket's
        # units belong to (a later one when a caller already took from it).
        at = max(now, blocked, float(doc["stamp"]))
        level, start = self.level(doc, at, 0.0)
        if level < units:
            # Spent in that window: the next one holds the limit again.
            at = start = start + self.budget.window_s
            level = float(self.budget.limit)
        wait = at - now
        if units > self.budget.limit or wait > max_wait_s:
            return {}, {"deferrals": 1}, self._deferral(at)
        incs: dict[str, Any] = {"units": units}
        if wait > 0:
            incs.update(waits=1, wait_s=wait)
        return {"tokens": level - units, "stamp": start}, incs, Grant(wait, at)

    def _deferral(self, until: float) -> Deferred:
        return Deferred(
            f"{self.provider.name}'s {self.budget.name} budget ({self.budget.limit} per "
            f"{self.budget.window_s} s) is spent until {_at(until).isoformat()}",
            until=_at(until),
        )

    @staticmethod
    def _raise(result: Any) -> Any:
        if isinstance(result, Deferred):
            raise result
        return result

    def give_back(self, units: int) -> None:
        """Return units taken for a call that will not be made (another budget deferred it)."""

        def change(doc: dict[str, Any], now: float) -> tuple[dict, dict, Any]:
            if self.budget.aligned:
                level, start = self.level(doc, max(now, float(doc["stamp"])), 0.0)
                tokens = min(float(self.budget.limit), level + units)
                return {"tokens": tokens, "stamp": start}, {"units": -units}, None
            capacity = float(doc.get("capacity") or self.capacity(units, 0.0))
            level, at = self.level(doc, now, capacity)
            sets = {"tokens": min(capacity, level + units), "stamp": at}
            return sets, {"units": -units}, None

        self.update(change)

    # --- What the provider says ----------------------------------------------------------

    def block(self, until: float, *, rate_limited: bool) -> None:
        """No call before ``until``; the units refill only from then."""

        def change(doc: dict[str, Any], now: float) -> tuple[dict, dict, Any]:
            incs = {"rate_limited": 1} if rate_limited else {}
            blocked = max(float(doc.get("blocked_until") or 0.0), until)
            sets: dict[str, Any] = {"blocked_until": blocked}
            if not self.budget.aligned:
                capacity = float(doc.get("capacity") or self.capacity(0, 0.0))
                level, at = self.level(doc, now, capacity)
                sets.update(tokens=min(level, 0.0), stamp=max(at, blocked))
            return sets, incs, None

        self.update(change)

    def count_rate_limited(self) -> None:
        self.update(lambda doc, now: ({}, {"rate_limited": 1}, None))

    def lower_to(self, remaining: int) -> None:
        """At most ``remaining`` units left in the provider's current window (it said so)."""

        def change(doc: dict[str, Any], now: float) -> tuple[dict, dict, Any]:
            if self.budget.aligned:
                level, start = self.level(doc, now, 0.0)
                if start > aligned_start(now, self.budget.window_s) or level <= remaining:
                    return {}, {}, None  # units already taken from a later window, or lower
                return {"tokens": float(max(0, remaining)), "stamp": start}, {}, None
            capacity = float(doc.get("capacity") or self.capacity(0, 0.0))
            level, at = self.level(doc, now, capacity)
            if level <= remaining:
                return {}, {}, None
            return {"tokens": float(remaining), "stamp": at}, {}, None

        self.update(change)


class ProviderBudget:
    """The ``CallBudget`` of one sync: the provider's budgets for one connected account."""

    def __init__(
        self,
        provider: type[Provider],
        *,
        account: str,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.provider = provider
        self.sleep = sleep
        # The application is Sibling's client at the provider: the sandbox's and a real one
        # never share a bucket.
        client = ""
        if provider.id in getattr(settings, "SIBLING_PROVIDERS", {}):
            client = str(provider.client_credentials().get("client_id", ""))
        self.buckets = [
            Bucket(provider, budget, account if budget.per == "account" else f"app:{client}")
            for budget in budgets_in_force(provider)
        ]

    def charge(self, operation: str, count: int = 1) -> float:
        """See ``ingestion.http.CallBudget.charge``."""
        max_wait = float(getattr(settings, "SIBLING_BUDGET_MAX_WAIT_S", 15))
        taken: list[tuple[Bucket, int]] = []
        wait = 0.0
        try:
            for bucket in self.buckets:
                units = bucket.budget.cost(operation, count)
                if units <= 0:
                    continue
                grant = bucket.take(units, max_wait)
                taken.append((bucket, units))
                self.granted(bucket, grant, units)
                wait = max(wait, grant.wait_s)
        except Deferred:
            for bucket, units in taken:
                bucket.give_back(units)
            raise
        if wait > 0:
            self.sleep(wait)
        return wait

    def refused(self, retry_after_s: float | None, *, counted: bool = True) -> None:
        """The provider refused a call for its rate (``counted``: a 429) and maybe said how
        long to wait: the account's buckets (the application's when the provider has no
        per-account budget) are empty until then. For clients whose library hides the
        response (``observe`` calls it for the others)."""
        targets = [b for b in self.buckets if b.budget.per == "account"] or self.buckets
        for bucket in targets:
            if retry_after_s:
                bucket.block(_now() + retry_after_s, rate_limited=counted)
            elif counted:
                bucket.count_rate_limited()

    def granted(self, bucket: Bucket, grant: Grant, units: int) -> None:
        """Called for every grant (a hook for tests that check what was granted when)."""

    def observe(self, response: requests.Response) -> None:
        """See ``ingestion.http.CallBudget.observe``."""
        status = response.status_code
        if status in (403, 429):
            retry_after = _retry_after_s(response)
            if status == 429 or retry_after:
                self.refused(retry_after, counted=status == 429)
        remaining = self.provider.budget_remaining(response)
        for bucket in self.buckets:
            if bucket.budget.name in remaining:
                bucket.lower_to(remaining[bucket.budget.name])


def _retry_after_s(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:  # an HTTP date
        from email.utils import parsedate_to_datetime

        return max(0.0, parsedate_to_datetime(value).timestamp() - _now())
    except (TypeError, ValueError):
        return None


def budget_for(provider: type[Provider], *, account: str) -> ProviderBudget | None:
    """The budget a sync of ``account`` charges; None when budgets are off or none declared."""
    if not getattr(settings, "SIBLING_BUDGETS", True) or not provider.budgets_declared():
        return None
    return ProviderBudget(provider, account=account)


# --- The dashboard ---------------------------------------------------------------------------


def budget_summary() -> list[dict[str, Any]]:
    """Per declared budget of every provider: its limit, window and scope, how many buckets
    were charged (or refused a charge) within the last window (active) and how many are spent
    now, the application bucket's level, and the counters (units, waits, seconds waited,
    deferrals, over-limit answers seen). Reads every bucket: one per account and budget."""
    from sources.providers import PROVIDERS

    now = _now()
    rows = []
    docs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    fields = ("provider", "budget", "tokens", "stamp", "capacity", "blocked_until", "updated_at")
    counters = ("units", "waits", "wait_s", "deferrals", "rate_limited")
    for doc in _collection().find({}, dict.fromkeys((*fields, *counters), 1)):
        docs.setdefault((doc["provider"], doc["budget"]), []).append(doc)
    for provider in PROVIDERS.values():
        try:
            in_force = budgets_in_force(provider)
        except ImproperlyConfigured as err:
            # Shown, not a broken page: the same error fails every sync of the provider.
            rows.append({"provider": provider.name, "budget": "", "error": str(err)})
            continue
        for budget in in_force:
            bucket = Bucket(provider, budget, "")
            found = docs.get((provider.id, budget.name), [])
            active = spent = 0
            app_level: float | None = None
            for doc in found:
                capacity = float(doc.get("capacity") or 0.0) or bucket.capacity(0, 0.0)
                level, _ = bucket.level(doc, now, capacity)
                recent = doc["updated_at"].replace(tzinfo=UTC).timestamp() >= now - budget.window_s
                active += int(recent)
                blocked = float(doc.get("blocked_until") or 0.0) > now
                spent += int(blocked or level < 1)
                if budget.per == "app":
                    full = budget.limit if budget.aligned else capacity
                    app_level = max(0.0, min(1.0, level / full)) if full else 0.0
            rows.append(
                {
                    "provider": provider.name,
                    "budget": budget.name,
                    "per": budget.per,
                    "limit": budget.limit,
                    "window_s": budget.window_s,
                    "aligned": budget.aligned,
                    "active": active,
                    "spent": spent,
                    "app_level_pct": None if app_level is None else round(app_level * 100),
                    "units": sum(int(d.get("units") or 0) for d in found),
                    "waits": sum(int(d.get("waits") or 0) for d in found),
                    "wait_s": round(sum(float(d.get("wait_s") or 0.0) for d in found), 1),
                    "deferrals": sum(int(d.get("deferrals") or 0) for d in found),
                    "rate_limited": sum(int(d.get("rate_limited") or 0) for d in found),
                }
            )
    return rows
