"""Provider budgets (ingestion.budgets): token buckets in MongoDB shared by every caller.

Concurrency is checked on what the buckets granted: each grant's time (when its units count as
spent, the call going then) is recorded, and no window of the budget's length holds more than
its limit. Nothing here asserts how long anything took."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import requests
from django.db import close_old_connections
from django.urls import reverse
from django.utils import timezone

from ingestion.budgets import Bucket, Grant, ProviderBudget, budget_summary, budgets_in_force
from ingestion.errors import Deferred
from ingestion.models import BudgetBucket, SyncRun
from sources.models import UserDataSource
from sources.providers.base import Budget, Provider
from tests.factories import STAFF_VIEW_PERMISSIONS, StaffFactory, UserFactory
from tests.ingestion.conftest import fresh, sync

pytestmark = pytest.mark.django_db
Outcome = SyncRun.Outcome


class Metered(Provider):
    """A provider declared for these tests only (not registered): one budget per account, one
    for the application, and an aligned one."""

    id = "metered"
    name = "Metered"
    budgets = (
        Budget("user", limit=20, window_s=1, costs={"big": 3}),
        Budget("app", limit=600, window_s=60, per="app", operations=frozenset({"shared"})),
    )


class Aligned(Provider):
    id = "aligned"
    name = "Aligned"
    budgets = (Budget("window", limit=5, window_s=900, per="app", aligned=True),)


class Recording(ProviderBudget):
    """Keeps every grant: (budget name, when the units count, units)."""

    def __init__(self, *args, log: list, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.log = log

    def granted(self, bucket: Bucket, grant: Grant, units: int) -> None:
        self.log.append((bucket.budget.name, grant.at, units))


@pytest.fixture(autouse=True)
def budgets_on(settings):
    settings.SIBLING_BUDGETS = True
    settings.SIBLING_BUDGET_BURST = 0.05
    settings.SIBLING_BUDGET_MAX_WAIT_S = 15


def most_in_any_window(grants: list[tuple[float, int]], window_s: float) -> int:
    """The most units granted within any window of ``window_s`` seconds (sliding)."""
    grants = sorted(grants)
    most = 0
    for i, (start, _units) in enumerate(grants):
        inside = sum(u for at, u in grants[i:] if at < start + window_s)
        most = max(most, inside)
    return most


def response(status: int, **headers: str) -> requests.Response:
    answer = requests.Response()
    answer.status_code = status
    answer.headers.update(headers)
    return answer


def bucket_row(name: str) -> BudgetBucket:
    return BudgetBucket.objects.get(budget=name)


# --- Concurrency -----------------------------------------------------------------------------


def test_threads_charging_one_bucket_never_exceed_the_limit_in_any_window():
    log: list = []
    errors: list = []

    def worker(n: int) -> None:
        budget = Recording(Metered, account="one-person", log=log)
        try:
            for i in range(8):
                budget.charge("big" if (n + i) % 4 == 0 else "list")
        except Exception as err:  # reported below, from the main thread
            errors.append(err)
        finally:
            close_old_connections()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    user = [(at, units) for name, at, units in log if name == "user"]
    charged = sum(units for _at, units in user)
    assert len(user) == 48 and charged == bucket_row("user").units
    # Far more than one window's limit was charged, yet no window saw more than the limit.
    assert charged > 2 * 20
    assert most_in_any_window(user, 1.0) <= 20
    # The application budget counts only its own operation.
    assert not BudgetBucket.objects.filter(budget="app").exists()


# Run by each worker process of the next test: charges one bucket from a given instant on and
# prints each grant as "<at> <units>".
CHARGING_PROCESS = """
import sys, time
import django
django.setup()
from tests.ingestion.test_budgets import Metered
from ingestion.budgets import ProviderBudget
start, charges = float(sys.argv[1]), int(sys.argv[2])
grants = []
class Logged(ProviderBudget):
    def granted(self, bucket, grant, units):
        if bucket.budget.name == "user":
            grants.append((grant.at, units))
budget = Logged(Metered, account="one-person")
time.sleep(max(0.0, start - time.time()))
for i in range(charges):
    budget.charge("big" if i % 5 == 0 else "list")
for at, units in grants:
    print(at, units)
"""


def test_two_processes_charging_one_bucket_never_exceed_the_limit_in_any_window(settings):
    import subprocess
    import sys
    import time

    from tests.helpers import BASE_DIR, project_env

    env = project_env(SIBLING_BUDGETS="1", SIBLING_BUDGET_MAX_WAIT_S="60")
    # Both start charging at the same instant, once both have had time to start.
    start = time.time() + 6
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", CHARGING_PROCESS, str(start), "15"],
            cwd=BASE_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    grants = []
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err[-2000:]
        grants += [
            (float(at), int(units))
            for at, units in (line.split() for line in out.split("\n") if line)
        ]
    assert len(grants) == 30
    charged = sum(units for _at, units in grants)
    assert charged == bucket_row("user").units and charged > 2 * 20
    assert most_in_any_window(grants, 1.0) <= 20
    # The two really overlapped: each was granted units while the other was.
    first, second = (sorted(g[0] for g in grants[:15]), sorted(g[0] for g in grants[15:]))
    assert first[0] < second[-1] and second[0] < first[-1]


def test_two_people_have_their_own_buckets_and_share_the_applications():
    log: list = []
    first = Recording(Metered, account="first", log=log)
    second = Recording(Metered, account="second", log=log)
    first.charge("shared")
    second.charge("shared", count=2)
    assert BudgetBucket.objects.filter(budget="user").count() == 2
    assert bucket_row("app").units == 3


# --- Wait or defer ---------------------------------------------------------------------------


def test_a_short_refill_is_waited_out_in_place_and_a_long_one_defers(settings):
    slept: list[float] = []
    budget = ProviderBudget(Metered, account="p", sleep=slept.append)
    # The burst (capacity: 1 unit at a limit of 20) goes at once, the next waits its refill.
    assert budget.charge("list") == 0.0
    waited = budget.charge("list")
    assert 0 < waited <= 1.0 and slept == [waited]
    row = bucket_row("user")
    assert (row.units, row.waits) == (2, 1) and row.wait_s == pytest.approx(waited)

    settings.SIBLING_BUDGET_MAX_WAIT_S = 0
    with pytest.raises(Deferred) as deferred:
        budget.charge("big")
    assert timezone.now() < deferred.value.until < timezone.now() + timedelta(seconds=2)
    assert "Metered's user budget (20 per 1 s) is spent" in str(deferred.value)
    row = bucket_row("user")
    # Nothing taken for the deferred call; the deferral is counted.
    assert (row.units, row.deferrals) == (2, 1) and slept == [waited]


def test_a_deferral_by_one_budget_gives_back_what_the_other_took(settings):
    settings.SIBLING_BUDGET_MAX_WAIT_S = 0
    settings.METERED_BUDGET_APP = 1  # one unit a minute for the application
    budget = ProviderBudget(Metered, account="p", sleep=lambda s: None)
    budget.charge("shared")
    user_level = bucket_row("user").tokens
    with pytest.raises(Deferred):
        budget.charge("shared")
    assert bucket_row("user").units == 1 and bucket_row("app").units == 1
    assert bucket_row("user").tokens >= user_level


def test_a_limit_setting_overrides_the_declaration(settings):
    settings.METERED_BUDGET_USER = 7
    limits = {b.name: b.limit for b in budgets_in_force(Metered)}
    assert limits == {"user": 7, "app": 600}


def test_budgets_off_charge_nothing(settings):
    from ingestion.budgets import budget_for

    settings.SIBLING_BUDGETS = False
    assert budget_for(Metered, account="p") is None
    settings.SIBLING_BUDGETS = True
    assert budget_for(Metered, account="p") is not None


# --- What the provider says ------------------------------------------------------------------


def test_retry_after_empties_the_accounts_bucket_until_then(settings):
    budget = ProviderBudget(Metered, account="p", sleep=lambda s: None)
    budget.charge("list")
    budget.observe(response(429, **{"Retry-After": "120"}))
    with pytest.raises(Deferred) as deferred:
        budget.charge("list")
    later = timezone.now() + timedelta(seconds=110)
    assert later < deferred.value.until < timezone.now() + timedelta(seconds=121)
    row = bucket_row("user")
    assert (row.rate_limited, row.deferrals, row.units) == (1, 1, 1)
    # Another person's bucket is not theirs to empty.
    ProviderBudget(Metered, account="other", sleep=lambda s: None).charge("list")


def test_a_429_without_retry_after_is_counted_and_a_short_retry_after_waited(settings):
    slept: list[float] = []
    budget = ProviderBudget(Metered, account="p", sleep=slept.append)
    budget.observe(response(429))
    assert bucket_row("user").rate_limited == 1
    budget.observe(response(403, **{"Retry-After": "3"}))
    assert budget.charge("list") > 2 and len(slept) == 1


@pytest.fixture
def mid_window(monkeypatch, settings):
    """The budgets' clock stopped in the middle of a 15-minute window, so no test's charges
    straddle a boundary; nothing is waited in place."""
    settings.SIBLING_BUDGET_MAX_WAIT_S = 0
    now = timezone.now().timestamp()
    frozen = now - now % 900 + 450
    monkeypatch.setattr("ingestion.budgets._now", lambda: frozen)
    return frozen


def test_reported_usage_lowers_an_aligned_bucket_to_the_next_window(mid_window, monkeypatch):
    monkeypatch.setattr(
        Aligned, "budget_remaining", classmethod(lambda cls, r: {"window": 0} if r else {})
    )
    budget = ProviderBudget(Aligned, account="p", sleep=lambda s: None)
    budget.charge("any")
    assert bucket_row("window").tokens == 4
    budget.observe(response(200))
    with pytest.raises(Deferred) as deferred:
        budget.charge("any")
    assert deferred.value.until.timestamp() == mid_window + 450
    assert deferred.value.until.minute % 15 == 0


def test_an_aligned_bucket_holds_its_limit_per_window(mid_window):
    log: list = []
    budget = Recording(Aligned, account="p", log=log, sleep=lambda s: None)
    for _ in range(5):
        budget.charge("any")
    with pytest.raises(Deferred):
        budget.charge("any")
    assert len(log) == 5 and bucket_row("window").units == 5


# --- A sync ----------------------------------------------------------------------------------


def test_a_spent_budget_defers_the_sync_with_its_pages_stored(key_connection, settings):
    provider = key_connection.provider_class
    budget = provider.budgets_declared()[0]
    # One call a minute, nothing waited in place: the second call defers the connection.
    setattr(settings, f"{provider.id.upper()}_BUDGET_{budget.name.upper()}", 1)
    settings.SIBLING_BUDGET_MAX_WAIT_S = 0
    run = sync(key_connection)
    assert run.outcome == Outcome.DEFERRED, run.error_message
    assert run.api_calls == 1 and run.rate_limited == 0 and run.pages == 1
    connection = fresh(key_connection)
    assert connection.cursors and connection.status == UserDataSource.Status.ACTIVE
    assert timezone.now() < connection.next_sync_at <= timezone.now() + timedelta(seconds=61)
    row = BudgetBucket.objects.get(provider=provider.id, budget=budget.name)
    assert (row.units, row.deferrals) == (1, 1)


# --- The dashboard ---------------------------------------------------------------------------


@pytest.fixture
def charged(settings):
    """Budgets of a registered provider with some use to show."""
    from sources.providers import PROVIDERS

    provider = next(p for p in PROVIDERS.values() if p.budgets_declared())
    ProviderBudget(provider, account="someone", sleep=lambda s: None).charge("x", count=1)
    return provider


def test_view_only_staff_see_each_budgets_use(client, charged):
    client.force_login(StaffFactory(permissions=STAFF_VIEW_PERMISSIONS))
    page = client.get(reverse("sync_dashboard"))
    assert page.status_code == 200
    rows = {(b["provider"], b["budget"]): b for b in page.context["budgets"]}
    first = charged.budgets_declared()[0]
    row = rows[(charged.name, first.name)]
    assert row["limit"] == first.limit and row["active"] == 1 and row["units"] >= 1
    html = page.content.decode()
    assert "Provider budgets" in html and "someone" not in html
    assert 'name="action"' not in html and "<form" not in html.split("Provider budgets")[1]


def test_a_superuser_sees_the_budgets_too(client, charged):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    page = client.get(reverse("sync_dashboard"))
    assert page.status_code == 200 and "Provider budgets" in page.content.decode()
    assert len(page.context["budgets"]) == len(budget_summary())


def test_a_person_and_anonymous_are_sent_to_the_admin_login(client, charged):
    url = reverse("sync_dashboard")
    anonymous = client.get(url)
    assert anonymous.status_code == 302 and reverse("admin:login") in anonymous["Location"]
    client.force_login(UserFactory())
    person = client.get(url)
    assert person.status_code == 302 and reverse("admin:login") in person["Location"]
    client.force_login(StaffFactory(permissions=()))
    assert client.get(url).status_code == 403
