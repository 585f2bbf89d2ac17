"""Strava's budgets: the application's four clock-aligned limits, and what each answer's usage
headers say remains of them (less STRAVA_RATE_LIMIT_RESERVE)."""

import requests

from ingestion.budgets import budgets_in_force
from sources.providers.strava.provider import Strava


def answer(**headers: str) -> requests.Response:
    response = requests.Response()
    response.status_code = 200
    response.headers.update(headers)
    return response


def test_the_documented_application_limits_on_aligned_windows():
    budgets = {b.name: b for b in budgets_in_force(Strava)}
    assert {n: (b.limit, b.window_s) for n, b in budgets.items()} == {
        "read_15min": (100, 900),
        "read_daily": (1_000, 86_400),
        "overall_15min": (200, 900),
        "overall_daily": (2_000, 86_400),
    }
    assert all(b.per == "app" and b.aligned for b in budgets.values())


def test_usage_headers_give_what_remains_less_the_reserve(settings):
    settings.STRAVA_RATE_LIMIT_RESERVE = 5
    remaining = Strava.budget_remaining(
        answer(
            **{
                "X-RateLimit-Limit": "200,2000",
                "X-RateLimit-Usage": "10,100",
                "x-readratelimit-limit": "100, 1000",
                "x-readratelimit-usage": "99, 500",
            }
        )
    )
    assert remaining == {
        "overall_15min": 185,
        "overall_daily": 1895,
        "read_15min": -4,
        "read_daily": 495,
    }
    # A small limit (a new application's) keeps at most a tenth in reserve.
    small = answer(**{"X-ReadRateLimit-Limit": "3,20", "X-ReadRateLimit-Usage": "1,1"})
    assert Strava.budget_remaining(small) == {"read_15min": 2, "read_daily": 17}


def test_answers_without_usage_or_with_broken_headers_change_nothing():
    assert Strava.budget_remaining(answer()) == {}
    broken = answer(**{"X-RateLimit-Limit": "200", "X-RateLimit-Usage": "a,b"})
    assert Strava.budget_remaining(broken) == {}
