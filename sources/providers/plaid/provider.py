from typing import Any

import plaid
import urllib3
from django.conf import settings
from plaid.api import plaid_api
from plaid.model.country_code import CountryCode
from plaid.model.item_public_token_exchange_request import ItemPublicTokenExchangeRequest
from plaid.model.item_remove_request import ItemRemoveRequest
from plaid.model.link_token_create_request import LinkTokenCreateRequest
from plaid.model.link_token_create_request_user import LinkTokenCreateRequestUser
from plaid.model.link_token_transactions import LinkTokenTransactions
from plaid.model.products import Products

from sources.providers.base import (
    PlaidLinkProvider,
    ProviderAuthError,
    ProviderError,
    RevocationError,
    RevocationToken,
    Stream,
    error_code_safe,
)

PLAID_VERSION = "2020-09-14"
# Item errors that mean the person must go through Link again (update mode):
# https://plaid.com/docs/errors/item/
REAUTH_ERROR_CODES = {"ITEM_LOGIN_REQUIRED", "INVALID_ACCESS_TOKEN", "ITEM_NOT_FOUND"}
# What /item/remove answers for an Item that no longer exists: nothing is left to remove.
ITEM_GONE_CODES = {"ITEM_NOT_FOUND", "INVALID_ACCESS_TOKEN"}


class TimeoutApiClient(plaid.ApiClient):
    """plaid-python's client with a timeout on every call: the generated client waits forever
    unless each call passes ``_request_timeout``; this gives them settings.PLAID_TIMEOUT_S."""

    def request(self, *args: Any, _request_timeout: Any = None, **kwargs: Any) -> Any:
        timeout = _request_timeout or settings.PLAID_TIMEOUT_S
        return super().request(*args, _request_timeout=timeout, **kwargs)


class Plaid(PlaidLinkProvider):
    """Bank transactions through Plaid (Link, then /transactions/sync)."""

    id = "plaid"
    name = "Bank (Plaid)"
    category = "external"
    streams = (
        Stream(
            "transactions", primary_key="transaction_id", cursor_field="cursor", kind="transaction"
        ),
    )
    urls = {
        "api": "https://production.plaid.com",
        "link_script": "https://cdn.plaid.com/link/v2/stable/link-initialize.js",
    }
    sandbox_paths = {"api": "/plaid", "link_script": "/plaid/link-initialize.js"}
    reauth_message = "Your bank asks you to sign in again."
    client_path = "sources.providers.plaid.client.PlaidSyncClient"
    processor_path = "sources.providers.plaid.processors.page_process"
    webhook_handler_path = "sources.providers.plaid.webhooks.event_handle"
    default_sync_interval_s = 6 * 3600

    @classmethod
    def api(cls) -> plaid_api.PlaidApi:
        creds = cls.client_credentials()
        configuration = plaid.Configuration(
            host=cls.url("api"),
            api_key={
                "clientId": creds["client_id"],
                "secret": creds["secret"],
                "plaidVersion": PLAID_VERSION,
            },
        )
        return plaid_api.PlaidApi(TimeoutApiClient(configuration))

    @classmethod
    def error_from(cls, err: plaid.ApiException) -> ProviderError:
        """The PlaidError body as one of our errors; the message is Plaid's display text."""
        import json

        try:
            body = json.loads(err.body or "{}")
        except ValueError:
            body = {}
        code = body.get("error_code", "")
        message = body.get("display_message") or f"Plaid answered {err.status} ({code or 'error'})"
        if code in REAUTH_ERROR_CODES:
            return ProviderAuthError(cls.reauth_message)
        return ProviderError(message)

    @classmethod
    def link_token_create(cls, *, client_user_id: str) -> str:
        request = LinkTokenCreateRequest(
            client_name="Sibling",
            language="en",
            country_codes=[CountryCode("US"), CountryCode("GB")],
            user=LinkTokenCreateRequestUser(client_user_id=client_user_id),
            products=[Products("transactions")],
            # How much history the first sync gets (Plaid's default is 90 days).
            transactions=LinkTokenTransactions(days_requested=settings.SIBLING_BACKFILL_DAYS),
            webhook=f"{settings.SIBLING_PUBLIC_URL}/webhooks/plaid/",
        )
        try:
            return cls.api().link_token_create(request)["link_token"]
        except plaid.ApiException as err:
            raise cls.error_from(err) from err
        except (urllib3.exceptions.HTTPError, OSError) as err:  # timeouts, refused connections
            raise ProviderError("Plaid could not be reached. Please try again.") from err

    @classmethod
    def public_token_exchange(cls, public_token: str) -> dict[str, str]:
        try:
            response = cls.api().item_public_token_exchange(
                ItemPublicTokenExchangeRequest(public_token=public_token)
            )
        except plaid.ApiException as err:
            raise cls.error_from(err) from err
        except (urllib3.exceptions.HTTPError, OSError) as err:
            raise ProviderError("Plaid could not be reached. Please try again.") from err
        return {"access_token": response["access_token"], "item_id": response["item_id"]}

    @classmethod
    def revoke_token(cls, token: RevocationToken) -> None:
        """/item/remove. Success, or ITEM_NOT_FOUND / INVALID_ACCESS_TOKEN (the Item is already
        gone), counts as removed; any other answer or error does not:
        https://plaid.com/docs/api/items/#itemremove"""
        try:
            cls.api().item_remove(ItemRemoveRequest(access_token=token.value))
        except plaid.ApiException as err:
            code = cls.error_code_of(err)
            if code in ITEM_GONE_CODES:
                return
            raise RevocationError(
                "Plaid did not confirm that the bank link was removed",
                code=code or str(err.status),
            ) from None  # the exception holds the request, the token with it
        except Exception as err:  # urllib3's connection errors and timeouts, a broken answer
            raise RevocationError(
                "Plaid could not be reached to remove the bank link", code=type(err).__name__
            ) from None

    @staticmethod
    def error_code_of(err: plaid.ApiException) -> str:
        import json

        try:
            body = json.loads(err.body or "{}")
        except ValueError:
            return ""
        return error_code_safe(body.get("error_code")) if isinstance(body, dict) else ""
