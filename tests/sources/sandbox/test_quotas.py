"""The sandbox's quota machinery: sliding and aligned windows, refusals not charged, the setting,
and every imitation's declaration (the providers' own answers are tested in their folders)."""

from __future__ import annotations

import threading
import uuid
from types import SimpleNamespace

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.http import HttpResponse, JsonResponse
from django.test import RequestFactory
from django.urls import URLPattern

from sources.sandbox import registry
from sources.sandbox.quotas import (
    Quota,
    QuotaCaller,
    module_quotas,
    quota_charge,
    quota_limit,
    quota_overrides,
    quota_used,
    quota_view,
    quotas_check,
)

pytestmark = pytest.mark.django_db

T0 = 1_800_000_000.0  # a whole minute (and quarter hour) of the epoch
SLOTS = 60  # a minute's window, in one-second slots


def refused(quota: Quota) -> HttpResponse:
    return JsonResponse({"over": quota.name}, status=429)


def quota(**changes) -> Quota:
    fields = {
        "name": f"q{uuid.uuid4().hex[:8]}",
        "per": "account",
        "limit": 3,
        "window_s": 60,
        "answer": refused,
    }
    return Quota(**{**fields, **changes})


def test_a_sliding_window_never_holds_more_than_the_limit():
    q = quota()
    assert all(quota_charge("p", q, "k", 1, 3, now=T0 + t) for t in (0, 10, 20))
    assert quota_charge("p", q, "k", 1, 3, now=T0 + 59.9) is None
    # Sliding, not reset on the minute: the first unit leaves the window 60 s after it came.
    assert quota_charge("p", q, "k", 1, 3, now=T0 + 60.2)
    assert quota_charge("p", q, "k", 1, 3, now=T0 + 69.9) is None
    assert quota_charge("p", q, "k", 1, 3, now=T0 + 70.0)
    for start in range(0, 75):
        assert quota_used("p", q, "k", now=T0 + start) <= 3


def test_a_refused_call_is_not_charged():
    q = quota(limit=20)
    assert quota_charge("p", q, "k", 15, 20, now=T0)
    assert quota_charge("p", q, "k", 10, 20, now=T0 + 1) is None
    assert quota_used("p", q, "k", now=T0 + 1) == 15
    # What remains is still there to spend.
    assert quota_charge("p", q, "k", 5, 20, now=T0 + 2)
    assert quota_used("p", q, "k", now=T0 + 2) == 20


def test_keys_and_providers_count_apart():
    q = quota(limit=1)
    assert quota_charge("p", q, "a@example.com", 1, 1, now=T0)
    assert quota_charge("p", q, "a@example.co", 1, 1, now=T0)
    assert quota_charge("other", q, "a@example.com", 1, 1, now=T0)
    assert quota_charge("p", q, "a@example.com", 1, 1, now=T0) is None


def test_an_aligned_window_starts_again_at_its_boundary():
    q = quota(window_s=900, aligned=True, limit=2)
    assert quota_charge("p", q, "app", 1, 2, now=T0 + 1)
    assert quota_charge("p", q, "app", 1, 2, now=T0 + 899)
    assert quota_charge("p", q, "app", 1, 2, now=T0 + 899.5) is None
    assert quota_charge("p", q, "app", 1, 2, now=T0 + 900)
    assert quota_used("p", q, "app", now=T0 + 901) == 1


def test_slots_no_window_reads_are_dropped():
    from sources.sandbox.models import QuotaSlot

    q = quota(limit=10_000)
    for second in range(SLOTS + 2):
        assert quota_charge("p", q, "k", 1, 10_000, now=T0 + second)
    assert quota_charge("p", q, "k", 1, 10_000, now=T0 + 500)
    (document,) = QuotaSlot.objects.filter(id__startswith=f"p|{q.name}|")
    assert list(document.slots) == [str(int(T0) + 500)]
    assert quota_used("p", q, "k", now=T0 + 500) == 1


def test_concurrent_charges_never_exceed_the_limit():
    q = quota(limit=10)
    admitted, errors = [], []

    def charge() -> None:
        try:
            for _ in range(5):
                if quota_charge("p", q, "k", 1, 10):
                    admitted.append(1)
        except Exception as err:
            errors.append(repr(err))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=charge) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(admitted) <= 10
    assert quota_used("p", q, "k") == len(admitted)


# --- The wrapper ----------------------------------------------------------------------------------


def imitation(*quotas: Quota, account: str = "acct", app: str = "client") -> SimpleNamespace:
    return SimpleNamespace(
        quotas=list(quotas), quota_caller=lambda request: QuotaCaller(account=account, app=app)
    )


def ok_view(request, **kwargs):
    ok_view.calls += 1
    return HttpResponse("ok")


ok_view.calls = 0


def call(view, times: int = 1) -> list[int]:
    request = RequestFactory().get("/sandbox/x")
    return [view(request).status_code for _ in range(times)]


def test_the_view_answers_the_quotas_answer_once_spent_and_never_runs(settings):
    settings.SIBLING_SANDBOX_QUOTAS = "on"
    user = quota(limit=2)
    view = quota_view(ok_view, module=imitation(user), provider_id="p", family=None, route="r")
    before = ok_view.calls
    assert call(view, 3) == [200, 200, 429]
    assert ok_view.calls == before + 2


def test_off_charges_nothing(settings):
    settings.SIBLING_SANDBOX_QUOTAS = "off"
    user = quota(limit=1)
    view = quota_view(ok_view, module=imitation(user), provider_id="p", family=None, route="r")
    assert call(view, 3) == [200, 200, 200]
    assert quota_used("p", user, "acct") == 0


def test_costs_per_route_and_routes_that_do_not_count(settings):
    settings.SIBLING_SANDBOX_QUOTAS = "on"
    units = quota(limit=25, costs={"get": 20}, routes=frozenset({"get", "list"}), default_cost=5)
    module = imitation(units)
    get = quota_view(ok_view, module=module, provider_id="p", family=None, route="get")
    listing = quota_view(ok_view, module=module, provider_id="p", family=None, route="list")
    batch = quota_view(ok_view, module=module, provider_id="p", family=None, route="batch")
    assert call(get) == [200]
    assert call(batch, 5) == [200] * 5  # not a counted route
    assert call(listing) == [200]
    assert call(listing) == [429]
    assert quota_used("p", units, "acct") == 25


def test_a_call_refused_by_its_app_quota_is_not_charged_to_its_account(settings):
    settings.SIBLING_SANDBOX_QUOTAS = "on"
    user, app = quota(limit=10), quota(per="app", limit=1)
    one = quota_view(
        ok_view, module=imitation(user, app, account="a"), provider_id="p", family=None, route="r"
    )
    other = quota_view(
        ok_view, module=imitation(user, app, account="b"), provider_id="p", family=None, route="r"
    )
    assert call(one) == [200]
    assert call(other) == [429]
    assert quota_used("p", user, "a") == 1
    assert quota_used("p", user, "b") == 0


def test_no_caller_charges_nothing(settings):
    settings.SIBLING_SANDBOX_QUOTAS = "on"
    user = quota(limit=1)
    module = SimpleNamespace(quotas=[user], quota_caller=lambda request: None)
    view = quota_view(ok_view, module=module, provider_id="p", family=None, route="r")
    assert call(view, 2) == [200, 200]


def test_overrides_name_a_provider_or_its_family(settings):
    user = quota(name="user", limit=6000)
    overrides = quota_overrides("fam.user=300,p.user=100")
    assert quota_limit(user, "p", "fam", overrides) == 100
    assert quota_limit(user, "q", "fam", overrides) == 300
    assert quota_limit(user, "r", None, overrides) == 6000
    settings.SIBLING_SANDBOX_QUOTAS = "p.user=1"
    view = quota_view(ok_view, module=imitation(user), provider_id="p", family="fam", route="r")
    assert call(view, 2) == [200, 429]


@pytest.mark.parametrize("value", ["p.user", "user=5", "p.user=-1", "p.user=x", "p.=3", "maybe"])
def test_a_malformed_setting_is_refused_naming_it(value):
    with pytest.raises(ImproperlyConfigured, match="SIBLING_SANDBOX_QUOTAS"):
        quota_overrides(value)


def test_a_setting_naming_no_known_quota_is_refused(settings):
    modules = registry.sandbox_modules()
    families = {p: registry.family_of(p) for p in modules}
    settings.SIBLING_SANDBOX_QUOTAS = "nobody.user=5"
    with pytest.raises(ImproperlyConfigured, match=r"no such quota nobody\.user"):
        quotas_check(modules, families)
    provider_id, module = next((p, m) for p, m in modules.items() if module_quotas(m))
    settings.SIBLING_SANDBOX_QUOTAS = f"{provider_id}.{module_quotas(module)[0].name}=5"
    quotas_check(modules, families)


def test_every_declared_quota_is_complete_and_names_its_own_routes():
    declared = 0
    for provider_id, module in registry.sandbox_modules().items():
        routes = {p.name for p in module.urlpatterns if isinstance(p, URLPattern)}
        for q in module_quotas(module):
            declared += 1
            assert q.per in ("account", "app"), provider_id
            assert q.limit > 0 and q.window_s > 0, provider_id
            assert callable(getattr(module, "quota_caller", None)), provider_id
            assert set(q.costs) <= routes, (provider_id, set(q.costs) - routes)
            assert q.routes is None or q.routes <= routes, (provider_id, q.routes - routes)
            assert callable(q.answer)
    assert declared


def test_every_provider_route_is_wrapped_once(client):
    from sources.sandbox import urls

    assert urls.urlpatterns
    for module in registry.sandbox_modules().values():
        for pattern in module.urlpatterns:
            assert getattr(pattern.callback, "sandbox_wrapped", False), pattern.name
            # The original view sits right under the two wrappers (quota, latency).
            assert not getattr(pattern.callback.__wrapped__.__wrapped__, "sandbox_wrapped", False)
