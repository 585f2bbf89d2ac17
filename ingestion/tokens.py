"""OAuth access tokens for syncs: refreshed before expiry and on 401, one refresh at a time.

Refreshes are serialized per connection with a lock taken by an atomic update on the connection
(``refresh_lock_until``), so two concurrent syncs never both spend a rotating, single-use refresh
token. New tokens are saved (encrypted) before they are used; a process that waited for the lock
reloads them instead of refreshing again.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import requests
from django.utils import timezone

from ingestion.errors import ReauthRequired, TransientError
from ingestion.http import provider_timeout
from sibling import mongo
from sources.models import UserDataSource
from sources.providers import OAuth2Provider

EXPIRY_MARGIN_S = 60
# The lock outlasts the token call's longest wait (connect plus read timeout) by this much, for
# saving the new tokens: a lock that ended while its holder still waited would let another sync
# spend the same rotating refresh token.
LOCK_MARGIN_S = 10
WAIT_FOR_LOCK_S = 20


def _lock_s() -> float:
    return sum(provider_timeout()) + LOCK_MARGIN_S


class OAuthTokens:
    def __init__(self, connection: UserDataSource) -> None:
        self.connection = connection
        self.provider: type[OAuth2Provider] = connection.provider_class  # type: ignore[assignment]

    @property
    def credentials(self) -> dict[str, Any]:
        return self.connection.credentials or {}

    def _expiring(self, credentials: dict[str, Any]) -> bool:
        expires_at = credentials.get("expires_at")
        return bool(expires_at) and expires_at - time.time() < EXPIRY_MARGIN_S

    def access_token(self) -> str:
        if not self.credentials.get("access_token") or self._expiring(self.credentials):
            self.refresh()
        return self.credentials["access_token"]

    def _reload(self) -> dict[str, Any]:
        stored = UserDataSource.objects.filter(pk=self.connection.pk).values_list(
            "credentials", "status"
        )
        credentials, status = stored.get()
        if status == UserDataSource.Status.REAUTH_REQUIRED or not credentials:
            raise ReauthRequired(self.provider.reauth_message)
        self.connection.credentials = credentials
        return credentials

    def refresh(self) -> None:
        """Get a new access token, unless another process got one since ours was issued."""
        used = self.credentials.get("access_token")
        deadline = time.monotonic() + WAIT_FOR_LOCK_S
        while True:
            current = self._reload()
            if current.get("access_token") != used and not self._expiring(current):
                return  # refreshed by someone else while we waited
            now = timezone.now()
            claimed = (
                mongo.plain_database()[UserDataSource._meta.db_table]
                .update_one(
                    # No lock, or an expired one (see ingestion.scheduler._unleased on $not).
                    {"_id": self.connection.pk, "refresh_lock_until": {"$not": {"$gte": now}}},
                    {"$set": {"refresh_lock_until": now + timedelta(seconds=_lock_s())}},
                )
                .modified_count
            )
            if claimed:
                try:
                    current = self._reload()
                    if current.get("access_token") != used and not self._expiring(current):
                        return
                    self._refresh_locked(current)
                finally:
                    UserDataSource.objects.filter(pk=self.connection.pk).update(
                        refresh_lock_until=None
                    )
                return
            if time.monotonic() > deadline:
                raise TransientError("another sync is still refreshing this connection's token")
            time.sleep(0.1)

    def _refresh_locked(self, current: dict[str, Any]) -> None:
        refresh_token = current.get("refresh_token")
        if not refresh_token:
            raise ReauthRequired(self.provider.reauth_message)
        client = self.provider.client_credentials()
        try:
            response = requests.post(
                self.provider.url("token"),
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": refresh_token,
                    "client_id": client["client_id"],
                    "client_secret": client["client_secret"],
                },
                timeout=provider_timeout(),
            )
        except (requests.Timeout, requests.ConnectionError) as err:
            raise TransientError(f"{self.provider.name} token endpoint unreachable") from err
        if response.status_code >= 500 or response.status_code == 429:
            raise TransientError(
                f"{self.provider.name} token endpoint answered {response.status_code}"
            )
        try:
            body = response.json()
        except ValueError as err:
            raise TransientError(f"{self.provider.name} token endpoint sent no JSON") from err
        if response.status_code != 200 or "access_token" not in body:
            # invalid_grant: revoked, expired, or a rotated refresh token used twice.
            raise ReauthRequired(self.provider.reauth_message)
        credentials = {**current, "access_token": body["access_token"]}
        if body.get("refresh_token"):
            credentials["refresh_token"] = body["refresh_token"]  # rotation
        if body.get("expires_in"):
            credentials["expires_at"] = int(time.time()) + int(body["expires_in"])
        # Saved before it is used: a crash now loses nothing, even with rotation.
        self.connection.credentials = credentials
        self.connection.save(update_fields=["credentials", "updated_at"])
