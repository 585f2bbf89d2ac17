"""Calling a provider: retries with backoff and jitter, rate limits, expired tokens.

Every call to a provider goes through here, from a sync as from a connect flow (an identity
lookup, a key check, a revocation), so all share one timeout (``SIBLING_PROVIDER_TIMEOUT_S``)
and one mapping of answers to ``ingestion.errors``.

Transient errors are retried in place with exponential backoff and jitter, a bounded number of
times. A rate limit whose wait is short is waited out in place; a long one defers the whole
connection (the worker is not held). An expired access token is refreshed once and the call made
again. Every call is counted for the SyncRun, and traced when tracing is on (a ``provider.call``
span per attempt: provider, operation, count, the budget's wait as ``budget.wait_s``).

A call made while a person waits for a page (``connect_policy()``) is tried at most twice, with
waits under a second: a web request never sleeps long on a provider.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol, TypeVar

import requests
from django.conf import settings
from django.utils import timezone

from ingestion.errors import (
    AccessExpired,
    Deferred,
    PermanentError,
    RateLimited,
    ReauthRequired,
    TransientError,
)
from sibling.tracing import span

T = TypeVar("T")
# Google advises waiting at least 30 s after a 429 that gives no Retry-After.
DEFAULT_RATE_LIMIT_WAIT_S = 30.0


@dataclass
class RetryPolicy:
    max_attempts: int = 5
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0
    max_inplace_wait_s: float = 5.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def backoff_s(self, attempt: int) -> float:
        """Full-jitter exponential backoff for the given (1-based) failed attempt."""
        ceiling = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311  (jitter, not security)


def connect_policy() -> RetryPolicy:
    """The policy of a call made while a person waits (connect, key check, revocation): one
    retry after a short pause; a rate limit of more than a second is not waited out."""
    return RetryPolicy(max_attempts=2, base_delay_s=0.25, max_delay_s=0.5, max_inplace_wait_s=1.0)


def provider_timeout() -> tuple[float, float]:
    """(connect, read) seconds for one provider call: ``SIBLING_PROVIDER_TIMEOUT_S``."""
    connect, read = settings.SIBLING_PROVIDER_TIMEOUT_S
    return float(connect), float(read)


class CallCounter:
    def __init__(self) -> None:
        self.calls = 0
        self.rate_limited = 0


class CallBudget(Protocol):
    """What a session charges before each provider call and tells after each answer
    (``ingestion.budgets``): a provider's quotas, shared by every worker."""

    def charge(self, operation: str, count: int = 1) -> float:
        """Take the cost of ``count`` calls of ``operation`` from every budget that counts it,
        waiting briefly when one refills soon; raises ``Deferred`` when one does not. Returns
        the seconds waited."""
        ...

    def observe(self, response: requests.Response) -> None:
        """Correct the budgets from what the provider said (``Retry-After``, usage headers)."""
        ...


def call_with_policy(
    fn: Callable[[], T],
    *,
    policy: RetryPolicy,
    refresh: Callable[[], None] | None = None,
    counter: CallCounter | None = None,
) -> T:
    """Run one provider call under the policy; see the module docstring."""
    refreshed = False
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except AccessExpired as err:
            if refresh is None:
                raise ReauthRequired(f"{err} and there is no way to refresh it") from err
            if refreshed:
                raise ReauthRequired("the provider refused a freshly refreshed token") from err
            refresh()
            refreshed = True
            attempt -= 1  # a refresh is not a failed attempt
        except RateLimited as err:
            if counter is not None:
                counter.rate_limited += 1
            wait = err.retry_after_s if err.retry_after_s is not None else DEFAULT_RATE_LIMIT_WAIT_S
            if wait > policy.max_inplace_wait_s or attempt >= policy.max_attempts:
                raise Deferred(str(err), until=timezone.now() + timedelta(seconds=wait)) from err
            policy.sleep(wait)
        except TransientError:
            if attempt >= policy.max_attempts:
                raise
            policy.sleep(policy.backoff_s(attempt))


def retry_after_s(response: requests.Response, *reset_headers: str) -> float | None:
    """Seconds to wait from Retry-After, or from a provider's seconds-until-reset header."""
    for name in ("Retry-After", *reset_headers):
        value = response.headers.get(name)
        if value:
            try:
                return max(0.0, float(value))
            except ValueError:
                continue
    return None


def response_check(response: requests.Response, *, provider_name: str) -> None:
    """The status codes every REST provider shares, mapped to what the runner does."""
    status = response.status_code
    if status < 400:
        return
    if status == 401:
        raise AccessExpired(f"{provider_name} refused the access token")
    if status == 429:
        raise RateLimited(f"{provider_name} rate limit", retry_after_s=retry_after_s(response))
    if status >= 500:
        raise TransientError(f"{provider_name} answered {status}")
    raise PermanentError(f"{provider_name} answered {status}")


class ProviderHttp:
    """A requests session for one sync: authenticated, retried, counted."""

    def __init__(
        self,
        *,
        provider_name: str,
        policy: RetryPolicy,
        counter: CallCounter,
        check: Callable[[requests.Response], None] | None = None,
        bearer: Callable[[], str] | None = None,
        refresh: Callable[[], None] | None = None,
        budget: CallBudget | None = None,
    ) -> None:
        self.provider_name = provider_name
        self.budget = budget
        self.policy = policy
        self.counter = counter
        self.check = check or (lambda r: response_check(r, provider_name=provider_name))
        self.bearer = bearer
        self.refresh = refresh
        self.session = requests.Session()

    @classmethod
    def for_connect(
        cls,
        *,
        provider_name: str,
        check: Callable[[requests.Response], None] | None = None,
        bearer: Callable[[], str] | None = None,
    ) -> ProviderHttp:
        """A session for one call made while a person waits (``connect_policy()``)."""
        return cls(
            provider_name=provider_name,
            policy=connect_policy(),
            counter=CallCounter(),
            check=check,
            bearer=bearer,
        )

    def get_json(self, url: str, *, params: Any = None, operation: str = "") -> Any:
        return self.request_json("GET", url, params=params, operation=operation)

    def post_json(self, url: str, *, body: Any, operation: str = "") -> Any:
        return self.request_json("POST", url, body=body, operation=operation)

    def request_json(
        self,
        method: str,
        url: str,
        *,
        params: Any = None,
        body: Any = None,
        operation: str = "",
        count: int = 1,
    ) -> Any:
        """The JSON body of a call that passed the check; a body that is not JSON is
        transient (a proxy's error page, a cut answer) and retried like a 5xx.

        ``operation`` names the provider's method (``messages.list``), what its budgets
        charge; ``count`` is how many calls one request carries (a batch)."""

        def parse(response: requests.Response) -> Any:
            try:
                return response.json()
            except ValueError as err:
                raise TransientError(f"{self.provider_name} sent a body that is not JSON") from err

        return self._call(
            method, url, parse, params=params, json=body, operation=operation, count=count
        )

    def request(
        self, method: str, url: str, *, operation: str = "", count: int = 1, **kwargs: Any
    ) -> requests.Response:
        """The response of a call that passed the check (``params``, ``data``, ``json``,
        ``headers`` and ``auth`` as for requests; ``operation`` and ``count`` as for
        ``request_json``)."""
        return self._call(
            method, url, lambda response: response, operation=operation, count=count, **kwargs
        )

    def _call(
        self,
        method: str,
        url: str,
        parse: Callable[[requests.Response], T],
        *,
        headers: dict[str, str] | None = None,
        operation: str = "",
        count: int = 1,
        **kwargs: Any,
    ) -> T:
        def once() -> T:
            # One span per attempt, the budget's wait included: where a slow sync's time went.
            with span(
                "provider.call",
                provider=self.provider_name,
                operation=operation or method,
                count=count,
            ) as current:
                return attempt(current)

        def attempt(current: Any) -> T:
            # Every attempt costs quota at the provider, a retry as much as the first.
            if self.budget is not None:
                waited = self.budget.charge(operation, count)
                if current is not None:
                    current.set_attribute("budget.wait_s", float(waited or 0.0))
            sent = dict(headers or {})
            if self.bearer:
                sent["Authorization"] = f"Bearer {self.bearer()}"
            try:
                response = self.session.request(
                    method, url, headers=sent, timeout=provider_timeout(), **kwargs
                )
            except (requests.Timeout, requests.ConnectionError) as err:
                raise TransientError(f"{self.provider_name} could not be reached") from err
            except requests.RequestException as err:  # a bad URL, too many redirects
                raise PermanentError(f"{self.provider_name} could not be called") from err
            finally:
                self.counter.calls += 1  # round trips; a batch's parts are charged to budgets
            if current is not None:
                current.set_attribute("http.status_code", response.status_code)
            if self.budget is not None:
                self.budget.observe(response)
            self.check(response)
            return parse(response)

        return call_with_policy(
            once, policy=self.policy, refresh=self.refresh, counter=self.counter
        )

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> ProviderHttp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
