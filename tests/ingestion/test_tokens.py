"""The refresh lock of OAuth tokens (ingestion.tokens)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from ingestion.tokens import OAuthTokens
from sources.models import UserDataSource
from tests.factories import UserDataSourceFactory
from tests.sources.providers.kit import provider_for

pytestmark = pytest.mark.django_db


def test_the_refresh_lock_outlasts_the_longest_token_call(settings, monkeypatch):
    """A lock that ended while its holder still waited on the token endpoint would let a second
    sync spend the same rotating refresh token: the provider would then refuse it and the
    person would have to connect again."""
    settings.SIBLING_PROVIDER_TIMEOUT_S = (5.0, 60.0)
    connection = UserDataSourceFactory(
        provider=provider_for(auth_mode="oauth2").id,
        credentials={"access_token": "old", "refresh_token": "r", "expires_at": 0},
    )
    held: list = []

    def refresh_locked(self: OAuthTokens, current: dict) -> None:
        held.append(
            UserDataSource.objects.filter(pk=connection.pk)
            .values_list("refresh_lock_until", flat=True)
            .get()
        )

    monkeypatch.setattr(OAuthTokens, "_refresh_locked", refresh_locked)
    asked_at = timezone.now()
    OAuthTokens(connection).refresh()
    assert held and held[0] > asked_at + timedelta(seconds=65)
