from typing import Any

import plaid
from django.conf import settings
from plaid.api import plaid_api
from plaid.model.accounts_get_request import AccountsGetRequest
from plaid.model.country_code import CountryCode
from plaid.model.item_public_token_exchange_request import ItemPublicTokenExchangeRequest
from plaid.model.item_remove_request import ItemRemoveRequest
from plaid.model.link_token_create_request import LinkTokenCreateRequest
from plaid.model.link_token_create_request_user import LinkTokenCreateRequestUser
from plaid.model.link_token_transactions import LinkTokenTransactions
from plaid.model.products import Products

from ingestion.http import provider_timeout
from sources.providers.base import (
    DAY,
    HOUR,
    Budget,
    HostedLinkProvider,
    LinkResult,
    RevocationError,
    RevocationToken,
    Setting,
    Stream,
)
from sources.providers.plaid import errors as plaid_errors
from sources.providers.plaid.errors import REAUTH_ERROR_CODES  # noqa: F401  (re-exported)
from sources.providers.plaid.kinds import TRANSACTION

PLAID_VERSION = "2020-09-14"
# What /item/remove answers for an Item that no longer exists: nothing is left to remove.
ITEM_GONE_CODES = {"ITEM_NOT_FOUND", "INVALID_ACCESS_TOKEN"}


class TimeoutApiClient(plaid.ApiClient):
    """plaid-python's client with a timeout on every call: the generated client waits forever
    unless each call passes ``_request_timeout``; this gives them the (connect, read) timeout
    of every provider call, settings.SIBLING_PROVIDER_TIMEOUT_S."""

    def request(self, *args: Any, _request_timeout: Any = None, **kwargs: Any) -> Any:
        timeout = _request_timeout or provider_timeout()
        return super().request(*args, _request_timeout=timeout, **kwargs)


class Plaid(HostedLinkProvider):
    """Bank transactions through Plaid (Link, then /transactions/sync)."""

    id = "plaid"
    name = "Bank (Plaid)"
    category = "external"
    streams = (Stream("transactions", kind="transaction"),)
    kinds = (TRANSACTION,)
    credentials = {"client_id": "sandbox-plaid-client", "secret": "sandbox-plaid-secret"}
    settings = (
        # A fetched webhook verification key is used this long, then fetched again (Plaid may
        # have expired it since).
        Setting("webhook_key_cache_s", default=3600, cast=int),
        # A kid Plaid does not know is remembered this long, and at most this many key fetches
        # run per minute in all (forged tokens name any kid they like; each fetch is an
        # outbound call).
        Setting("webhook_unknown_kid_s", default=300, cast=int),
        Setting("webhook_key_fetches_per_min", default=5, cast=int),
        # How soon a sync asks again while Plaid prepares a new Item's transactions
        # (NOT_READY, or only the recent days in); SYNC_UPDATES_AVAILABLE usually comes first.
        Setting("preparing_retry_s", default=120, sandbox_default=10, cast=int),
    )
    urls = {
        "api": "https://production.plaid.com",
        "link_script": "https://cdn.plaid.com/link/v2/stable/link-initialize.js",
    }
    sandbox_paths = {"api": "/plaid", "link_script": "/plaid/link-initialize.js"}
    # Link's web API: https://plaid.com/docs/link/web/ (Plaid.create({token, onSuccess, onExit})).
    link_global = "Plaid"
    link_help = (
        "Your bank connection goes through Plaid. Sibling never sees your bank password; "
        "it reads your transactions only."
    )
    link_button = "Choose your bank"
    # Link calls the API environment from the page:
    # https://plaid.com/docs/link/web/#content-security-policy-csp
    link_connect_urls = ("api",)
    reauth_message = "Your bank asks you to sign in again."
    client_path = "sources.providers.plaid.client.PlaidSyncClient"
    processor_path = "sources.providers.plaid.processors.page_process"
    webhook_handler_path = "sources.providers.plaid.webhooks.event_handle"
    webhook_receiver_path = "sources.providers.plaid.webhooks.PlaidWebhookReceiver"
    default_sync_interval_s = 6 * HOUR
    # SYNC_UPDATES_AVAILABLE says when Plaid has new transactions (it checks the bank a few
    # times a day): https://plaid.com/docs/transactions/webhooks/. Polling more often than
    # hourly only spends the Item's /transactions/sync budget.
    sync_interval_choices = (HOUR, 6 * HOUR, 12 * HOUR, DAY)
    # Link's transactions.days_requested: 1 to 730 days, fixed when the Item is made
    # (https://plaid.com/docs/api/link/#link-token-create-request-transactions-days-requested).
    max_backfill_days = 730
    backfill_fixed_at_connect = True
    # https://plaid.com/docs/errors/rate-limit-exceeded/: /transactions/sync per Item and per
    # client (the production figures; Plaid may set others per customer).
    budgets = (
        Budget("item_sync", limit=50, window_s=60, operations=frozenset({"transactions/sync"})),
        Budget(
            "client_sync",
            limit=2_500,
            window_s=60,
            per="app",
            operations=frozenset({"transactions/sync"}),
        ),
    )

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
    def link_token_create(
        cls,
        *,
        client_user_id: str,
        credentials: dict[str, Any] | None = None,
        backfill_days: int | None = None,
    ) -> str:
        """A Link token; with a connection's credentials, one for Link's update mode on its
        Item (https://plaid.com/docs/link/update-mode/): the person signs in again, and the
        same Item, with the same access token, works again. No products are named then.
        For a new Item, ``backfill_days`` is the history Plaid fetches from the bank."""
        fields: dict[str, Any] = {
            "client_name": "Sibling",
            "language": "en",
            "country_codes": [CountryCode("US"), CountryCode("GB")],
            "user": LinkTokenCreateRequestUser(client_user_id=client_user_id),
            "webhook": f"{settings.SIBLING_PUBLIC_URL}/webhooks/plaid/",
        }
        if credentials and credentials.get("access_token"):
            fields["access_token"] = str(credentials["access_token"])
        else:
            fields["products"] = [Products("transactions")]
            # How much history the Item gets, fixed now (Plaid's default is 90 days).
            days = backfill_days if backfill_days else cls.backfill_days_default()
            fields["transactions"] = LinkTokenTransactions(days_requested=days)
        request = LinkTokenCreateRequest(**fields)
        # Any failure is one of ingestion.errors (a ProviderError; ProviderAuthError when the
        # person must go through Link again), read by sources.providers.plaid.errors.
        response = plaid_errors.call(
            lambda: cls.api().link_token_create(request), reauth_message=cls.reauth_message
        )
        return response["link_token"]

    @classmethod
    def link_update(
        cls, credentials: dict[str, Any], public_token: str, metadata: dict[str, Any]
    ) -> LinkResult:
        """After Link's update mode: no exchange (the public token is not needed), the Item's
        access token is checked to work again and kept."""
        access_token = str(credentials.get("access_token") or "")
        item_id = str(credentials.get("item_id") or "")
        plaid_errors.call(
            lambda: cls.api().accounts_get(AccountsGetRequest(access_token=access_token)),
            reauth_message=cls.reauth_message,
        )
        return LinkResult(
            external_account_id=item_id,
            credentials={"access_token": access_token, "item_id": item_id},
            account_label="",
        )

    @classmethod
    def public_token_exchange(cls, public_token: str) -> dict[str, str]:
        response = plaid_errors.call(
            lambda: cls.api().item_public_token_exchange(
                ItemPublicTokenExchangeRequest(public_token=public_token)
            ),
            reauth_message=cls.reauth_message,
        )
        return {"access_token": response["access_token"], "item_id": response["item_id"]}

    @classmethod
    def link_exchange(cls, public_token: str, metadata: dict[str, Any]) -> LinkResult:
        """The Item's access token for Link's public token, labelled with the institution's
        name from Link's onSuccess metadata (sent by the browser: a label only, cut short)."""
        exchanged = cls.public_token_exchange(public_token)
        institution = metadata.get("institution")
        name = institution.get("name") if isinstance(institution, dict) else None
        return LinkResult(
            external_account_id=exchanged["item_id"],
            credentials=exchanged,
            account_label=(str(name).strip() if name else "")[:100] or "Bank account",
        )

    @classmethod
    def revoke_token(cls, token: RevocationToken) -> None:
        """/item/remove. Success, or ITEM_NOT_FOUND / INVALID_ACCESS_TOKEN (the Item is already
        gone), counts as removed; any other answer or error does not:
        https://plaid.com/docs/api/items/#itemremove"""
        try:
            cls.api().item_remove(ItemRemoveRequest(access_token=token.value))
        except plaid.ApiException as err:
            code = plaid_errors.error_code(err)
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
