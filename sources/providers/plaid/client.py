"""/transactions/sync with a cursor: added, modified and removed until has_more is false.

A new Item's first answer may be empty with transactions_update_status NOT_READY and an empty
next_cursor: nothing is stored, no cursor kept, the card says the bank is preparing, and the
sync is deferred PLAID_PREPARING_RETRY_S. INITIAL_UPDATE_COMPLETE brings the recent 30 days;
the older ones come from the same cursor once HISTORICAL_UPDATE_COMPLETE.

https://plaid.com/docs/api/products/transactions/#transactionssync
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import plaid
from django.conf import settings
from django.utils import timezone
from plaid.model.transactions_sync_request import TransactionsSyncRequest

from ingestion.clients import Page, SyncClient
from ingestion.errors import Deferred, PermanentError, RateLimited, TransientError
from ingestion.http import call_with_policy
from sources.models import UserDataSource
from sources.providers import Stream
from sources.providers.plaid import errors as plaid_errors
from sources.providers.plaid.provider import Plaid

PAGE_SIZE = 500
# transactions_update_status: https://plaid.com/docs/api/products/transactions/#transactionssync
NOT_READY = "NOT_READY"
INITIAL_UPDATE_COMPLETE = "INITIAL_UPDATE_COMPLETE"
# What the connection's card says while Plaid prepares a new Item's transactions.
PREPARING = "Your bank is preparing your history. It appears here in a few minutes."
PREPARING_OLDER = "Your recent transactions are in; your bank is still preparing older history."
PREPARING_NOTICES = (PREPARING, PREPARING_OLDER)
MUTATION = "TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION"
MAX_RESTARTS = 3


class PaginationRestart(Exception):
    pass


class PlaidSyncClient(SyncClient):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.api = Plaid.api()

    def _sync(self, cursor: str) -> dict[str, Any]:
        request = TransactionsSyncRequest(
            access_token=self.connection.credentials["access_token"],
            count=PAGE_SIZE,
            **({"cursor": cursor} if cursor else {}),
        )
        # plaid-python calls through urllib3, not ProviderHttp: the budget is charged here, before
        # each attempt (call_with_policy retries this whole method).
        if self.budget is not None:
            self.budget.charge("transactions/sync")
        self.counter.calls += 1
        try:
            # The raw body, exactly as received: it is what is kept for reprocessing.
            response = plaid_errors.call(
                lambda: self.api.transactions_sync(request, _preload_content=False),
                reauth_message=Plaid.reauth_message,
            )
        except RateLimited as err:
            if self.budget is not None:
                self.budget.refused(err.retry_after_s)
            raise
        except PermanentError as err:
            if isinstance(err.__cause__, plaid.ApiException):
                if plaid_errors.error_code(err.__cause__) == MUTATION:
                    raise PaginationRestart from err
            raise
        try:
            return json.loads(response.data)
        except ValueError as err:
            raise TransientError("Plaid sent a body that is not JSON") from err

    def pages(self, stream: Stream, cursor: Any) -> Iterator[Page]:
        start = cursor or ""
        for _restart in range(MAX_RESTARTS + 1):
            current = start
            try:
                while True:
                    body = call_with_policy(
                        lambda c=current: self._sync(c), policy=self.policy, counter=self.counter
                    )
                    status = body.get("transactions_update_status")
                    if status == NOT_READY or not body.get("next_cursor"):
                        # A new Item before its first update: nothing to store, no cursor to
                        # keep (an empty one would restart the history); ask again soon.
                        self._preparing(PREPARING)
                        raise Deferred(
                            "Plaid is still preparing the Item's transactions",
                            until=timezone.now()
                            + timedelta(seconds=settings.PLAID_PREPARING_RETRY_S),
                        )
                    yield Page(payload=body, cursor=body["next_cursor"])
                    current = body["next_cursor"]
                    if not body.get("has_more"):
                        self._loop_end(status)
                        return
            except PaginationRestart:
                # Plaid: restart from the cursor the loop began with; pages already stored are
                # upserted again without duplicates.
                continue
        raise TransientError("Plaid data kept changing during pagination")

    def _loop_end(self, status: Any) -> None:
        if status == INITIAL_UPDATE_COMPLETE:
            # The recent 30 days are in; the older days follow once Plaid's historical update
            # is done (SYNC_UPDATES_AVAILABLE says so; without webhooks, this sync soon does).
            self._preparing(PREPARING_OLDER)
            UserDataSource.objects.filter(pk=self.connection.pk).update(
                next_sync_at=timezone.now() + timedelta(seconds=settings.PLAID_PREPARING_RETRY_S)
            )
        else:
            self._preparing("")

    def _preparing(self, text: str) -> None:
        """Say on the connection's card that the bank is still preparing (or no longer is),
        without touching any other notice it carries."""
        rows = UserDataSource.objects.filter(pk=self.connection.pk)
        if text:
            rows.filter(notice__in=("", *PREPARING_NOTICES)).update(notice=text)
        else:
            rows.filter(notice__in=PREPARING_NOTICES).update(notice="")
