"""Plaid's errors read once (sources.providers.plaid.errors), from PlaidError bodies as Plaid
documents them (https://plaid.com/docs/errors/), and its calls' timeout."""

from __future__ import annotations

import json

import plaid
import pytest
import urllib3
from plaid.model.item_remove_request import ItemRemoveRequest

from ingestion.errors import (
    PermanentError,
    ProviderAuthError,
    ProviderError,
    RateLimited,
    ReauthRequired,
    TransientError,
)
from sources.providers.plaid import Plaid
from sources.providers.plaid import errors as plaid_errors
from sources.providers.plaid.webhooks import HANDLERS
from tests.scripted_http import Answer, scripted_server

REAUTH = "Your bank asks you to sign in again."


def failure(status: int, body: object, headers: dict[str, str] | None = None):
    err = plaid.ApiException(status=status, reason="error")
    err.body = body if isinstance(body, str) else json.dumps(body)
    err.headers = headers or {}
    return err


def plaid_error(status, error_type, code, display=None, **extra):
    return failure(
        status,
        {
            "error_type": error_type,
            "error_code": code,
            "error_message": "for developers only",
            "display_message": display,
            "request_id": "req-1",
            **extra,
        },
    )


def mapped(err):
    return plaid_errors.api_error(err, reauth_message=REAUTH)


@pytest.mark.parametrize(
    ("err", "expected"),
    [
        (plaid_error(400, "ITEM_ERROR", "ITEM_LOGIN_REQUIRED"), ReauthRequired),
        (plaid_error(400, "INVALID_INPUT", "INVALID_ACCESS_TOKEN"), ReauthRequired),
        (plaid_error(400, "ITEM_ERROR", "ITEM_NOT_FOUND"), ReauthRequired),
        (plaid_error(400, "ITEM_ERROR", "INVALID_CREDENTIALS"), ReauthRequired),
        # "Not yet" is not "sign in again": the sync is retried later.
        (plaid_error(400, "ITEM_ERROR", "PRODUCT_NOT_READY"), TransientError),
        (plaid_error(429, "RATE_LIMIT_EXCEEDED", "TRANSACTIONS_SYNC_LIMIT"), RateLimited),
        (plaid_error(500, "API_ERROR", "INTERNAL_SERVER_ERROR"), TransientError),
        (plaid_error(400, "INVALID_INPUT", "INVALID_PUBLIC_TOKEN"), PermanentError),
        (failure(502, "<html>Bad gateway</html>"), TransientError),
        (failure(400, "not json"), PermanentError),
    ],
)
def test_each_plaid_error_maps_to_one_of_ours(err, expected):
    error = mapped(err)
    assert isinstance(error, expected) and isinstance(error, ProviderError)
    if expected is ReauthRequired:
        assert isinstance(error, ProviderAuthError) and str(error) == REAUTH


def test_the_message_is_plaids_display_message_or_the_status_and_code_never_the_developer_text():
    shown = mapped(plaid_error(400, "INVALID_INPUT", "INVALID_PUBLIC_TOKEN", "Please try again."))
    assert str(shown) == "Please try again."
    plain = mapped(plaid_error(400, "INVALID_INPUT", "INVALID_PUBLIC_TOKEN"))
    assert str(plain) == "Plaid answered 400 (INVALID_PUBLIC_TOKEN)"
    assert "for developers" not in f"{shown} {plain}"


def test_a_rate_limit_honours_retry_after_when_plaid_sends_it():
    err = plaid_error(429, "RATE_LIMIT_EXCEEDED", "ACCOUNTS_LIMIT")
    err.headers = {"Retry-After": "7"}
    assert mapped(err).retry_after_s == 7.0
    assert mapped(plaid_error(429, "RATE_LIMIT_EXCEEDED", "ACCOUNTS_LIMIT")).retry_after_s is None


def test_an_error_code_is_cut_to_what_can_be_logged():
    err = plaid_error(400, "INVALID_INPUT", 'X"}\n<script>' + "A" * 100)
    code = plaid_errors.error_code(err)
    assert code.startswith("Xscript") and len(code) <= 60
    assert plaid_errors.error_code(failure(500, "oops")) == ""


def test_network_failures_are_transient():
    def unreachable():
        raise urllib3.exceptions.MaxRetryError(None, "/item/remove", "refused")

    with pytest.raises(TransientError, match="could not be reached"):
        plaid_errors.call(unreachable, reauth_message=REAUTH)


server = pytest.fixture(scripted_server)


def test_every_plaid_call_waits_at_most_the_provider_timeout(server, settings, monkeypatch):
    # Plaid's generated client waits forever unless told; it gets SIBLING_PROVIDER_TIMEOUT_S.
    settings.SIBLING_PROVIDER_TIMEOUT_S = (2.0, 0.3)
    monkeypatch.setattr(Plaid, "url", classmethod(lambda cls, name: server.url))
    monkeypatch.setattr(
        Plaid, "client_credentials", classmethod(lambda cls: {"client_id": "c", "secret": "s"})
    )
    server.answers(Answer(stall_s=3, body={"removed": True}))
    with pytest.raises(TransientError):
        plaid_errors.call(
            lambda: Plaid.api().item_remove(ItemRemoveRequest(access_token="access-x")),
            reauth_message=REAUTH,
        )


def test_webhook_event_types_map_to_handlers_through_a_table():
    assert set(HANDLERS) == {
        "TRANSACTIONS.SYNC_UPDATES_AVAILABLE",
        "TRANSACTIONS.INITIAL_UPDATE",
        "TRANSACTIONS.HISTORICAL_UPDATE",
        "TRANSACTIONS.DEFAULT_UPDATE",
        "TRANSACTIONS.TRANSACTIONS_REMOVED",
        "ITEM.ERROR",
        "ITEM.LOGIN_REPAIRED",
        "ITEM.NEW_ACCOUNTS_AVAILABLE",
        "ITEM.PENDING_EXPIRATION",
        "ITEM.PENDING_DISCONNECT",
        "ITEM.USER_PERMISSION_REVOKED",
        "ITEM.WEBHOOK_UPDATE_ACKNOWLEDGED",
    }
    assert all(callable(handler) for handler in HANDLERS.values())
