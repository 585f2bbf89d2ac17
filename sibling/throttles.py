"""Rate limits for people's pages (django-ratelimit on the shared cache, sibling.cache).

Each limited view counts its requests per key (an address, a username, a signed-in person) in
the window its rate names (``"10/10m"``: ten per ten minutes, windows fixed per key). Over the
limit the view is not run: the answer is 429 with ``Retry-After`` (seconds to the window's end)
and a clear message, as a page for people or as JSON for JSON endpoints. Rates are settings read
at request time, so they can be changed per environment (and per test). Addresses are
:func:`client_address` (django-ratelimit's ``RATELIMIT_IP_META_KEY``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django_ratelimit.core import get_usage

THROTTLED_MESSAGE = "Too many attempts. Please wait a little and try again."
Key = str | Callable[[str, HttpRequest], str]


def client_address(request: HttpRequest) -> str:
    """The address a request came from, as per-address limits count it.

    ``REMOTE_ADDR``, unless ``SIBLING_PROXY_COUNT`` proxies stand in front (the TLS proxy of a
    production setup): each appends the address it was reached from to ``X-Forwarded-For``, so
    the entry that many from the right is the one the outermost proxy saw. Entries further left
    were written by the client and are not believed. With fewer entries than proxies, or an
    entry that is not an address, the connection's own address is counted.
    """
    remote = str(request.META.get("REMOTE_ADDR") or "")
    hops = settings.SIBLING_PROXY_COUNT
    if hops <= 0:
        return remote
    forwarded = [
        entry.strip() for entry in str(request.META.get("HTTP_X_FORWARDED_FOR", "")).split(",")
    ]
    if len(forwarded) < hops:
        return remote
    try:
        return str(ipaddress.ip_address(forwarded[-hops]))
    except ValueError:
        return remote


def username_key(group: str, request: HttpRequest) -> str:
    """The username a login form names, as a person would type it again."""
    return str(request.POST.get("username", "")).strip().lower()[:150]


def user_key(group: str, request: HttpRequest) -> str:
    return str(request.user.pk) if request.user.is_authenticated else ""


def _wait_text(seconds: int) -> str:
    if seconds < 90:
        return f"{seconds} seconds"
    return f"{(seconds + 59) // 60} minutes"


def throttled_response(request: HttpRequest, *, retry_after: int, as_json: bool) -> HttpResponse:
    retry_after = max(1, int(retry_after))
    if as_json:
        response: HttpResponse = JsonResponse(
            {"error": THROTTLED_MESSAGE, "retry_after": retry_after}, status=429
        )
    else:
        response = render(
            request,
            "throttled.html",
            {
                "message": THROTTLED_MESSAGE,
                "wait_text": _wait_text(retry_after),
                "back_url": request.path,
            },
            status=429,
        )
    response["Retry-After"] = str(retry_after)
    return response


def rate_limit(
    *, group: str, key: Key, rate_setting: str, method: str = "POST", as_json: bool = False
) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """Limit a view to ``settings.<rate_setting>`` requests per key (``method`` requests only).

    Stack several for several keys (a login: per address and per username); each counts.
    """

    def rate(group_name: str, request: HttpRequest) -> str:
        return getattr(settings, rate_setting)

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def limited(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            usage = get_usage(
                request, group=group, key=key, rate=rate, method=method, increment=True
            )
            if usage is not None and usage["should_limit"]:
                # time_left is -1 when the cache could not count (refused, not let through).
                wait = usage["time_left"] if usage["time_left"] > 0 else 60
                return throttled_response(request, retry_after=wait, as_json=as_json)
            return view(request, *args, **kwargs)

        return limited

    return decorator


def login_limited(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """A login view counted per address (one host guessing many accounts) and per username
    (many hosts guessing one). Every login form shares the counts: people's and admin's."""
    view = rate_limit(
        group="login-username", key=username_key, rate_setting="SIBLING_LOGIN_RATE_USERNAME"
    )(view)
    return rate_limit(group="login-ip", key="ip", rate_setting="SIBLING_LOGIN_RATE_IP")(view)


def _signed_in_username_key(group: str, request: HttpRequest) -> str:
    # The signed-in person's username as the login's limit counts it (username_key).
    return request.user.get_username().strip().lower()[:150]


def password_guess_usage(request: HttpRequest, *, increment: bool) -> dict[str, Any] | None:
    """The signed-in person's wrong passwords on a form that asks for theirs again (Delete all
    my data, admin's erasure), counted on the login's own per-username counter (same group, key
    and rate): otherwise such a form would be a way around the login's limit for someone who
    holds a session. django-ratelimit's usage dict, or None when nothing is counted."""
    return get_usage(
        request,
        group="login-username",
        key=_signed_in_username_key,
        rate=settings.SIBLING_LOGIN_RATE_USERNAME,
        method="POST",
        increment=increment,
    )
