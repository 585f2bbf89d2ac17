"""Reads on connections, shaped for people's pages."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Q

from sibling.lookups import object_or_404
from sources.models import PendingRevocation, UserDataSource
from sources.providers import PROVIDERS, HostedLinkProvider, Provider

Status = UserDataSource.Status

# What each status means to a person, and what they can do about it.
STATUS_TEXT = {
    Status.ACTIVE: "Active",
    Status.PAUSED: "Paused: no new data is fetched until you resume.",
    Status.ERROR: "Syncing failed several times in a row, so it has stopped. "
    "Reconnect to start again.",
    Status.DISCONNECTED: "Disconnected. The data already fetched is kept.",
}


@dataclass
class ProviderCard:
    provider: type[Provider]
    connections: list[UserDataSource] = field(default_factory=list)
    # Grants this person let go of that the provider has not confirmed withdrawn yet.
    pending_revocations: list[PendingRevocation] = field(default_factory=list)

    @property
    def several_accounts(self) -> bool:
        # A hosted link (a bank's, say) is made per account, and several are usual.
        return issubclass(self.provider, HostedLinkProvider)

    @property
    def can_add(self) -> bool:
        # One account per provider is the common case otherwise, but a disconnected one can
        # always be connected again.
        return self.several_accounts or not any(c.is_connected for c in self.connections)


def status_text(connection: UserDataSource) -> str:
    if connection.status == Status.REAUTH_REQUIRED:
        return connection.provider_class.reauth_message
    if connection.status == Status.ERROR and connection.last_error:
        return f"{STATUS_TEXT[Status.ERROR]} The last error: {connection.last_error}"
    return STATUS_TEXT.get(connection.status, connection.get_status_display())


def connection_cards(*, user: AbstractBaseUser) -> list[ProviderCard]:
    cards = {provider_id: ProviderCard(provider) for provider_id, provider in PROVIDERS.items()}
    for connection in UserDataSource.objects.filter(user=user).order_by("created_at"):
        if connection.provider in cards:
            connection.status_text = status_text(connection)
            cards[connection.provider].connections.append(connection)
    labels = {c.pk: c.account_label for card in cards.values() for c in card.connections}
    for pending in revocations_pending(user=user):
        if pending.provider in cards:
            pending.account_label = labels.get(pending.connection_id) or ""
            cards[pending.provider].pending_revocations.append(pending)
    return list(cards.values())


def revocations_pending(
    *, user: AbstractBaseUser, connection: UserDataSource | None = None
) -> list[PendingRevocation]:
    """The person's revocations not confirmed yet, oldest first, tokens left unread."""
    rows = PendingRevocation.objects.filter(user=user).defer("token").order_by("created_at")
    if connection is not None:
        rows = rows.filter(connection=connection)
    return list(rows)


def connection_get(*, user: AbstractBaseUser, connection_id: str) -> UserDataSource:
    """The person's own connection, or 404: another person's id looks like a missing one."""
    return object_or_404(UserDataSource.objects.filter(user=user), connection_id, what="connection")


def person_by_login(identifier: str) -> AbstractBaseUser | None:
    """A person by username or email (for operators' commands)."""
    return (
        get_user_model()
        .objects.filter(Q(username=identifier) | Q(email__iexact=identifier))
        .first()
    )
