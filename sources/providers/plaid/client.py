"""/transactions/sync with a cursor: added, modified and removed until has_more is false.

https://plaid.com/docs/api/products/transactions/#transactionssync
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import plaid
from plaid.model.transactions_sync_request import TransactionsSyncRequest

from ingestion.clients import Page, SyncClient
from ingestion.errors import PermanentError, TransientError
from ingestion.http import call_with_policy
from sources.providers import Stream
from sources.providers.plaid import errors as plaid_errors
from sources.providers.plaid.provider import Plaid

PAGE_SIZE = 500
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
        self.counter.calls += 1
        try:
            # The raw body, exactly as received: it is what is kept for reprocessing.
            response = plaid_errors.call(
                lambda: self.api.transactions_sync(request, _preload_content=False),
                reauth_message=Plaid.reauth_message,
            )
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
                    # An empty next_cursor means the data is not ready yet: keep the old one.
                    yield Page(payload=body, cursor=body.get("next_cursor") or None)
                    current = body.get("next_cursor") or current
                    if not body.get("has_more"):
                        return
            except PaginationRestart:
                # Plaid: restart from the cursor the loop began with; pages already stored are
                # upserted again without duplicates.
                continue
        raise TransientError("Plaid data kept changing during pagination")
