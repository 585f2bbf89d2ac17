"""Writes on connections: connect, pause, resume, sync now, disconnect."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Q
from django.utils import timezone
from social_django.models import UserSocialAuth

from sources.models import UserDataSource
from sources.providers import OAuth2Provider, Provider
from sources.revocations import grant_revoke
from sources.signals import (
    CREATED,
    DISCONNECTED,
    connection_changed_send,
    connection_data_erase,
    connection_disconnecting,
    connection_due,
)

logger = logging.getLogger(__name__)
Status = UserDataSource.Status
# How far a connection's next sync may sit from its interval's schedule and still be taken for
# that schedule (the runner writes both from one clock reading; databases keep milliseconds).
SCHEDULE_SLACK = timedelta(seconds=1)


def oauth_credentials_from(response: dict[str, Any], *, uid: str) -> dict[str, Any]:
    """Token endpoint response -> what a connection stores (encrypted)."""
    credentials: dict[str, Any] = {
        "uid": uid,
        "access_token": response["access_token"],
        "token_type": response.get("token_type", "Bearer"),
        "scope": response.get("scope", ""),
    }
    if response.get("refresh_token"):
        credentials["refresh_token"] = response["refresh_token"]
    if response.get("expires_in"):
        expires_at = timezone.now() + timedelta(seconds=int(response["expires_in"]))
        credentials["expires_at"] = int(expires_at.timestamp())
    return credentials


# What connecting (or reconnecting) an account writes on an existing connection.
CONNECT_FIELDS = (
    "credentials",
    "account_label",
    "external_lookup",
    "notice",
    "granted_scopes",
    "sandbox",
    "status",
    "last_error",
    "consecutive_failures",
    "disconnected_at",
    "next_sync_at",
    "updated_at",
)


def connection_upsert(
    *,
    user: AbstractBaseUser,
    provider: type[Provider],
    external_account_id: str,
    credentials: dict[str, Any],
    account_label: str = "",
    granted_scopes: list[str] | None = None,
    backfill_days: int | None = None,
) -> UserDataSource:
    """Create the connection, or bring an existing one for the same account back to active.

    Credentials replace the stored ones, except that a refresh token the provider did not send
    again is kept. ``backfill_days`` is the history window the person chose on the connect step
    (one of the provider's ``backfill_choices``; None: the default); it applies while the
    connection has fetched nothing. A reconnect keeps the cursors (even after a disconnect that
    kept the data), so its first sync fetches only what came since; a provider that no longer
    knows a cursor says so, and its client lists the gap again (``SyncClient.gap_start``).
    """
    now = timezone.now()
    if backfill_days is not None and not provider.backfill_days_valid(backfill_days):
        raise ValueError(f"{provider.id} offers no history window of {backfill_days} days")
    connection = UserDataSource.objects.filter(
        user=user, provider=provider.id, external_account_id=external_account_id
    ).first()
    fields = list(CONNECT_FIELDS)
    if connection is None:
        connection = UserDataSource(
            user=user,
            provider=provider.id,
            external_account_id=external_account_id,
            sync_interval=provider.default_sync_interval_s,
            backfill_progress=0.0,
            backfill_days=backfill_days,
        )
    else:
        if connection.credentials and "refresh_token" not in credentials:
            if refresh_token := connection.credentials.get("refresh_token"):
                credentials = {**credentials, "refresh_token": refresh_token}
        if backfill_days is not None and not connection.history_fetched:
            connection.backfill_days = backfill_days
            fields.append("backfill_days")
    connection.credentials = credentials
    connection.account_label = account_label or connection.account_label
    if "@" in (account_label or ""):
        connection.external_lookup = UserDataSource.lookup_key(account_label)
    connection.notice = ""
    connection.granted_scopes = granted_scopes or []
    connection.sandbox = provider.sandboxed()
    connection.status = Status.ACTIVE
    connection.last_error = ""
    connection.consecutive_failures = 0
    connection.disconnected_at = None
    connection.next_sync_at = now
    # Connecting is one of the flows that may create the person's data key (refused once their
    # erasure has begun); the credentials are encrypted with it on save.
    from ingestion.fence import data_key_ensure

    data_key_ensure(user.pk)
    if connection.pk is None:
        connection.save()
    else:
        # Only what connecting decides: a full save would write back the lease, cursors and
        # queued windows as read above, over what a running sync stored since.
        connection.save(update_fields=fields)
    logger.info("connection %s (%s) connected", connection.pk, provider.id)
    connection_changed_send(connection, CREATED)
    connection_due.send(sender=UserDataSource, connection=connection, trigger="backfill")
    return connection


def connection_pause(*, connection: UserDataSource) -> bool:
    if connection.status != Status.ACTIVE:
        return False
    connection.status = Status.PAUSED
    connection.save(update_fields=["status", "updated_at"])
    return True


def connection_resume(*, connection: UserDataSource) -> bool:
    if connection.status != Status.PAUSED:
        return False
    connection.status = Status.ACTIVE
    connection.next_sync_at = timezone.now()
    connection.save(update_fields=["status", "next_sync_at", "updated_at"])
    connection_due.send(sender=UserDataSource, connection=connection, trigger="manual")
    return True


def connection_sync_now(*, connection: UserDataSource) -> bool:
    """Make the connection due now; the scheduler picks it up. False when it cannot sync."""
    if connection.status != Status.ACTIVE:
        return False
    connection.next_sync_at = timezone.now()
    connection.save(update_fields=["next_sync_at", "updated_at"])
    connection_due.send(sender=UserDataSource, connection=connection, trigger="manual")
    return True


def connection_full_resync(*, connection: UserDataSource) -> bool:
    """Forget the cursors so the next sync starts over with a backfill."""
    if connection.status != Status.ACTIVE:
        return False
    connection.cursors = {}
    connection.backfill_progress = 0.0
    connection.next_sync_at = timezone.now()
    connection.save(update_fields=["cursors", "backfill_progress", "next_sync_at", "updated_at"])
    connection_due.send(sender=UserDataSource, connection=connection, trigger="backfill")
    return True


def connection_schedule_set(
    *, connection: UserDataSource, sync_interval: int, now: datetime | None = None
) -> bool:
    """Sync this connection every ``sync_interval`` seconds (one of its provider's
    ``sync_interval_choices``, or the interval it has) and move its next sync to match.

    The next sync comes ``sync_interval`` after the last successful one (at once when that is
    past), except that a sooner request (Sync now, a provider's notification) stands, and so
    does a later deferral or backoff (a spent quota, a bank preparing, failures). While a sync
    runs it counts from now, so the run's end does not schedule with the old interval. A
    connection that never succeeded, or that does not sync now (paused, disconnected), keeps its
    next sync. False when the interval is not one the provider offers.
    """
    provider = connection.provider_class
    if sync_interval != connection.sync_interval and sync_interval not in (
        provider.sync_interval_choices
    ):
        return False
    now = now or timezone.now()
    old = timedelta(seconds=connection.sync_interval)
    new = timedelta(seconds=sync_interval)
    changes: dict[str, Any] = {"sync_interval": sync_interval}
    current = connection.next_sync_at
    leased = connection.leased(now)
    if connection.status == Status.ACTIVE and current is not None:
        if leased:
            changes["next_sync_at"] = max(current, now + new) if current > now else now + new
        elif connection.last_success_at is not None:
            planned = connection.last_success_at + old
            wanted = max(connection.last_success_at + new, now)
            if current < planned - SCHEDULE_SLACK:
                wanted = min(wanted, current)  # a sooner request stands
            elif current > planned + SCHEDULE_SLACK:
                wanted = max(wanted, current)  # a deferral or backoff stands
            changes["next_sync_at"] = wanted
    # One conditional write: a sync that started since this connection was read (it holds the
    # lease now) is not rescheduled from the figures read before it.
    rows = UserDataSource.objects.filter(pk=connection.pk, lease_owner=connection.lease_owner)
    if not rows.update(**changes, updated_at=now):
        changes.pop("next_sync_at", None)
        UserDataSource.objects.filter(pk=connection.pk).update(**changes, updated_at=now)
    for name, value in changes.items():
        setattr(connection, name, value)
    logger.info("connection %s syncs every %d s", connection.pk, sync_interval)
    return True


def connection_backfill_set(*, connection: UserDataSource, backfill_days: int) -> bool:
    """Choose how far back the first sync reaches, while nothing has been fetched yet.

    False when the window is not one the provider offers, when the provider fixes it on the
    connect step, or once a sync has stored anything or holds the connection (it read the
    window when it started). The write is conditional on the same, so a sync that starts
    meanwhile wins and the window stays as it read it.
    """
    provider = connection.provider_class
    now = timezone.now()
    if not provider.backfill_days_valid(backfill_days) or not connection.history_choosable(now):
        return False
    # A sync stores pages only under the lease; a killed worker's lease counts once expired.
    unleased = Q(lease_expires_at=None) | Q(lease_expires_at__lte=now)
    changed = (
        UserDataSource.objects.filter(pk=connection.pk, last_success_at=None)
        .filter(unleased)
        .update(backfill_days=backfill_days, updated_at=now)
    )
    if changed:
        connection.backfill_days = backfill_days
    return bool(changed)


def connection_data_delete(*, connection: UserDataSource) -> int:
    """Erase what Sibling collected through this connection (every receiver of
    ``connection_data_erase``); the connection itself stays. Returns how many records went.

    Its cursors go too: a reconnect fetches only what came after its cursors, so with the data
    gone they would leave the history missing; without them it backfills again.
    """
    deleted = sum(
        int(deleted or 0)
        for _receiver, deleted in connection_data_erase.send(
            sender=UserDataSource, connection=connection
        )
    )
    if connection.pk is not None:
        UserDataSource.objects.filter(pk=connection.pk).update(cursors={}, backfill_progress=0.0)
        connection.cursors, connection.backfill_progress = {}, 0.0
    return deleted


@dataclass
class DisconnectResult:
    provider_name: str
    # The provider confirmed that the grant ended (or there was no grant to end).
    revoked: bool
    revoke_error: str = ""
    # Not confirmed: a pending revocation keeps asking (sources.revocations).
    revocation_pending: bool = False
    records_deleted: int = 0
    data_deleted: bool = False


def connection_disconnect(
    *, connection: UserDataSource, delete_data: bool, keep_pending: bool = True
) -> DisconnectResult:
    """Revoke the grant at the provider, forget the credentials, and mark it disconnected.

    With ``delete_data`` the records from this connection are erased and the connection itself
    is deleted. A provider that does not confirm the revocation does not keep the person
    connected: the local credentials are forgotten either way, the result says the revocation
    is not confirmed, and (with ``keep_pending``) a pending revocation asks again until it is.
    """
    provider = connection.provider_class
    if connection.credentials:
        connection_disconnecting.send_robust(sender=UserDataSource, connection=connection)
    credentials = connection.credentials or {}
    result = DisconnectResult(provider_name=provider.name, revoked=True)
    token = provider.revocation_token(credentials)
    if token is not None:
        outcome = grant_revoke(
            user_id=connection.user_id,
            provider=provider,
            token=token,
            connection_id=connection.pk,
            keep_pending=keep_pending,
        )
        result.revoked = outcome.confirmed
        result.revoke_error = str(outcome.error or "")
        result.revocation_pending = outcome.pending is not None
    if issubclass(provider, OAuth2Provider) and credentials.get("uid"):
        UserSocialAuth.objects.filter(
            user=connection.user, provider=provider.id, uid=credentials["uid"]
        ).delete()
    if delete_data:
        result.records_deleted = connection_data_delete(connection=connection)
        result.data_deleted = True
        connection_id = connection.pk
        connection.delete()
        connection.pk = connection_id  # for the receivers, which may name it
        connection.status = Status.DISCONNECTED
        logger.info("connection of %s disconnected and its data deleted", provider.id)
        connection_changed_send(connection, DISCONNECTED)
        return result
    connection.credentials = None
    connection.status = Status.DISCONNECTED
    connection.disconnected_at = timezone.now()
    connection.next_sync_at = None
    connection.save(
        update_fields=["credentials", "status", "disconnected_at", "next_sync_at", "updated_at"]
    )
    logger.info("connection %s (%s) disconnected, data kept", connection.pk, provider.id)
    connection_changed_send(connection, DISCONNECTED)
    return result
