"""/transactions/sync with a cursor: added, modified and removed until has_more is false.

https://plaid.com/docs/api/products/transactions/#transactionssync
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import plaid
import urllib3
from plaid.model.transactions_sync_request import TransactionsSyncRequest

from ingestion.clients import Page, SyncClient
from ingestion.errors import PermanentError, RateLimited, ReauthRequired, TransientError
from ingestion.http import call_with_policy
from sources.providers import Stream
from sources.providers.plaid.provider import REAUTH_ERROR_CODES, Plaid

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
            response = self.api.transactions_sync(request, _preload_content=False)
            return json.loads(response.data)
        except plaid.ApiException as err:
            raise self._error(err) from err
        except (urllib3.exceptions.HTTPError, OSError) as err:
            raise TransientError("Plaid could not be reached") from err
        except ValueError as err:
            raise TransientError("Plaid sent a body that is not JSON") from err

    def _error(self, err: plaid.ApiException) -> Exception:
        try:
            body = json.loads(err.body or "{}")
        except ValueError:
            body = {}
        code = body.get("error_code", "")
        if code == MUTATION:
            return PaginationRestart()
        if code in REAUTH_ERROR_CODES or body.get("error_type") == "ITEM_ERROR":
            return ReauthRequired(Plaid.reauth_message)
        if err.status == 429 or body.get("error_type") == "RATE_LIMIT_EXCEEDED":
            retry = err.headers.get("Retry-After") if err.headers else None
            return RateLimited(f"Plaid rate limit ({code})", retry_after_s=_float(retry))
        if err.status and err.status >= 500:
            return TransientError(f"Plaid answered {err.status} ({code or 'error'})")
        return PermanentError(f"Plaid answered {err.status} ({code or 'error'})")

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


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
