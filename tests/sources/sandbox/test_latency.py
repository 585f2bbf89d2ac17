"""The sandbox's injected round trip: which delay a route gets, its jitter, and that a request
waits once (through an injected sleep: no test here measures time)."""

from __future__ import annotations

import random

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpResponse
from django.test import RequestFactory

from sources.sandbox.latency import latency_delay_s, latency_ms, latency_table, latency_view


def test_off_by_default_and_zero():
    assert latency_ms(("p", "fam"), "0") == 0
    assert latency_ms(("p", "fam"), "") == 0
    assert latency_delay_s(("p", "fam"), value="0") == 0


def test_one_number_is_every_providers_delay():
    assert latency_ms(("p", "fam"), "100") == 100
    assert latency_ms(("q",), "100") == 100


def test_the_most_specific_entry_wins():
    value = "p=100,fam=80,other=50,*=30"
    assert latency_ms(("p", "fam"), value) == 100
    assert latency_ms(("q", "fam"), value) == 80
    assert latency_ms(("other",), value) == 50
    assert latency_ms(("lone",), value) == 30
    assert latency_ms(("lone",), "p=100") == 0  # no `*`: others wait nothing


def test_jitter_spreads_the_delay_uniformly(settings):
    settings.SIBLING_SANDBOX_LATENCY_JITTER = 0.2
    rng = random.Random(7)
    delays = [latency_delay_s(("p",), rng=rng, value="100") for _ in range(500)]
    assert all(0.08 <= d <= 0.12 for d in delays)
    assert min(delays) < 0.085 and max(delays) > 0.115
    settings.SIBLING_SANDBOX_LATENCY_JITTER = 0
    assert latency_delay_s(("p",), value="100") == pytest.approx(0.1)


@pytest.mark.parametrize("value", ["fast", "p=", "=100", "p=100,p=50", "-5", "p=99999999"])
def test_a_malformed_setting_is_refused_naming_it(value):
    with pytest.raises(ImproperlyConfigured, match="SIBLING_SANDBOX_LATENCY_MS"):
        latency_table(value)


def test_a_jitter_out_of_range_is_refused(settings):
    settings.SIBLING_SANDBOX_LATENCY_JITTER = 1.5
    with pytest.raises(ImproperlyConfigured, match="SIBLING_SANDBOX_LATENCY_JITTER"):
        latency_delay_s(("p",), value="100")


def test_the_view_sleeps_its_providers_delay_after_answering(settings):
    settings.SIBLING_SANDBOX_LATENCY_MS = "p=100,*=40"
    settings.SIBLING_SANDBOX_LATENCY_JITTER = 0
    events: list = []

    def view(request):
        events.append("answer")
        return HttpResponse("ok")

    wrapped = latency_view(view, ("p", "fam"), sleep=lambda s: events.append(s))
    other = latency_view(view, ("q",), sleep=lambda s: events.append(s))
    assert wrapped(RequestFactory().get("/")).status_code == 200
    assert other(RequestFactory().get("/")).status_code == 200
    assert events == ["answer", pytest.approx(0.1), "answer", pytest.approx(0.04)]


def test_off_never_sleeps(settings):
    settings.SIBLING_SANDBOX_LATENCY_MS = "0"
    slept: list = []
    wrapped = latency_view(lambda r: HttpResponse("ok"), ("p",), sleep=slept.append)
    wrapped(RequestFactory().get("/"))
    assert slept == []


def test_a_view_called_inside_another_is_the_same_round_trip(settings):
    """A batch's parts go through the wrapped views: one HTTP request, one wait."""
    settings.SIBLING_SANDBOX_LATENCY_MS = "100"
    settings.SIBLING_SANDBOX_LATENCY_JITTER = 0
    slept: list = []
    part = latency_view(lambda r: HttpResponse("part"), ("p",), sleep=slept.append)

    def batch(request):
        return HttpResponse(b"".join(part(request).content for _ in range(3)))

    outer = latency_view(batch, ("p",), sleep=slept.append)
    assert outer(RequestFactory().get("/")).content == b"partpartpart"
    assert slept == [pytest.approx(0.1)]
    # And the context is clean again afterwards: a later request waits.
    part(RequestFactory().get("/"))
    assert len(slept) == 2


def test_an_error_in_the_view_leaves_later_requests_waiting(settings):
    settings.SIBLING_SANDBOX_LATENCY_MS = "100"
    slept: list = []

    def broken(request):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        latency_view(broken, ("p",), sleep=slept.append)(RequestFactory().get("/"))
    latency_view(lambda r: HttpResponse("ok"), ("p",), sleep=slept.append)(
        RequestFactory().get("/")
    )
    assert len(slept) == 1


@pytest.mark.django_db
def test_every_sandbox_route_of_a_provider_waits_its_delay(client, settings, monkeypatch):
    """Over the sandbox's URLs: a Google provider's API, Google's OAuth server (the family's
    delay) and another provider's route each wait their own; the control API never waits."""
    from types import SimpleNamespace

    from sources import providers
    from sources.sandbox import latency, registry

    slept: list = []
    monkeypatch.setattr(latency, "time", SimpleNamespace(sleep=slept.append))
    google_id = next(p for p in providers.PROVIDERS if registry.family_of(p) == "google")
    other_id = next(p for p in providers.PROVIDERS if registry.family_of(p) is None)
    settings.SIBLING_SANDBOX_LATENCY_MS = f"{google_id}=150,google=80,*=30"
    settings.SIBLING_SANDBOX_LATENCY_JITTER = 0

    def first_route(provider_id: str) -> str:
        module = registry.sandbox_modules()[provider_id]
        return "/sandbox/" + str(module.urlpatterns[0].pattern).replace("<str:", "").replace(
            ">", ""
        )

    client.get(first_route(google_id))
    assert slept == [pytest.approx(0.15)]
    client.get("/sandbox/google/oauth2/v3/certs")
    assert slept[-1] == pytest.approx(0.08)
    client.get(first_route(other_id))
    assert slept[-1] == pytest.approx(0.03)
    client.get("/sandbox/_faults")
    assert len(slept) == 3
