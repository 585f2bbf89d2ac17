"""Plaid's errors, read once: every plaid-python call's failure as one of ingestion.errors.

Plaid answers errors as a PlaidError body (https://plaid.com/docs/errors/):
``{"error_type", "error_code", "error_message", "display_message", "request_id", ...}``.
``display_message`` is written by Plaid for the end user (it may be null); ``error_message`` is
for developers and is never shown.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import plaid
import urllib3

from ingestion.errors import (
    PermanentError,
    ProviderError,
    RateLimited,
    ReauthRequired,
    TransientError,
    error_code_safe,
)

T = TypeVar("T")

NAME = "Plaid"
# Item errors that mean the person must go through Link again (update mode):
# https://plaid.com/docs/errors/item/
REAUTH_ERROR_CODES = frozenset({"ITEM_LOGIN_REQUIRED", "INVALID_ACCESS_TOKEN", "ITEM_NOT_FOUND"})
# ITEM_ERROR codes that say "not yet" or "not now", not "sign in again": retried later.
ITEM_RETRY_CODES = frozenset({"PRODUCT_NOT_READY", "ITEM_LOCKED", "ITEM_CONCURRENTLY_DELETED"})
UNREACHABLE = "Plaid could not be reached. Please try again."


def error_body(err: plaid.ApiException) -> dict[str, Any]:
    """The PlaidError body of a failed call; {} when it is not one."""
    try:
        body = json.loads(err.body or "{}")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def error_code(err: plaid.ApiException) -> str:
    """Plaid's ``error_code``, cut to what can be logged; "" when there is none."""
    return error_code_safe(error_body(err).get("error_code"))


def _retry_after_s(err: plaid.ApiException) -> float | None:
    try:
        return float(err.headers.get("Retry-After")) if err.headers else None
    except (TypeError, ValueError):
        return None


def api_error(err: plaid.ApiException, *, reauth_message: str) -> ProviderError:
    """What a PlaidError means for the caller.

    ReauthRequired (ProviderAuthError) when the person must go through Link again; RateLimited
    for 429 or RATE_LIMIT_EXCEEDED; TransientError for 5xx and the Item errors that pass;
    PermanentError otherwise. The message is Plaid's display message when it gave one, else
    the status and code.
    """
    body = error_body(err)
    code = error_code_safe(body.get("error_code"))
    error_type = error_code_safe(body.get("error_type"))
    described = f"Plaid answered {err.status} ({code or 'error'})"
    display = body.get("display_message")
    message = str(display)[:200] if isinstance(display, str) and display else described
    if code in ITEM_RETRY_CODES:
        return TransientError(described)
    if code in REAUTH_ERROR_CODES or error_type == "ITEM_ERROR":
        return ReauthRequired(reauth_message)
    if err.status == 429 or error_type == "RATE_LIMIT_EXCEEDED":
        return RateLimited(f"Plaid rate limit ({code})", retry_after_s=_retry_after_s(err))
    if err.status is not None and err.status >= 500:
        return TransientError(described)
    return PermanentError(message)


def call(fn: Callable[[], T], *, reauth_message: str) -> T:
    """Run one plaid-python call (it carries settings.SIBLING_PROVIDER_TIMEOUT_S); a failure
    is raised as one of ingestion.errors, a network error or a timeout as TransientError."""
    try:
        return fn()
    except plaid.ApiException as err:
        raise api_error(err, reauth_message=reauth_message) from err
    except (urllib3.exceptions.HTTPError, OSError) as err:  # timeouts, refused connections
        raise TransientError(UNREACHABLE) from err
