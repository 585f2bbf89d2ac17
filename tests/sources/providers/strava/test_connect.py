"""Strava's connect, refresh, revoke and error tests, from the OAuth2 base."""

from __future__ import annotations

from typing import Any

import pytest

import tests.sources.providers.kit as kit
from sources.models import UserDataSource
from sources.providers.strava.sandbox import NS, athlete_id_for
from sources.sandbox.faults import fault_set
from sources.sandbox.store import record_live, records_of
from tests.sources.providers.kit import OAuth2ProviderTests, token_refresh
from tests.sources.providers.strava.conftest import new_username, strava_connect


def _athlete(account: str) -> str:
    """The athlete id behind a consent-page username (faults address athletes)."""
    return account if account.isdigit() else athlete_id_for(account)


def assert_strava_grant_ended(provider: Any, refresh_token: str) -> None:
    # Strava refuses a dead refresh token with its own Fault, not RFC 6749's invalid_grant.
    refused = token_refresh(provider, refresh_token)
    assert refused.status_code == 400, refused.text
    assert refused.json()["errors"][0]["resource"] == "RefreshToken"


class TestStravaConnect(OAuth2ProviderTests):
    provider_id = "strava"
    allow_button = "Authorize"
    deny_button = "Cancel"
    # The person unticks the one scope Sibling asks for.
    partial_scope_values = {"accepted": ""}

    @pytest.fixture(autouse=True)
    def _strava_grant_check(self, monkeypatch):
        monkeypatch.setattr(kit, "assert_grant_ended", assert_strava_grant_ended)

    def account(self) -> str:
        return new_username()

    def consent_values(self, form_fields: dict[str, str], account: str) -> dict[str, str]:
        return {"username": account}

    def sandbox_connect(self, person: Any) -> UserDataSource:
        return strava_connect(person)

    def sandbox_fault(self, account: str, fault: str, count: int = 1) -> None:
        fault_set(self.provider_id, _athlete(account), fault, count)

    def grant_revoked(self, account: str) -> bool:
        refresh = records_of(NS, _athlete(account), "refresh")
        return bool(refresh) and not any(record_live(r) for r in refresh)

    def issued_tokens(self, account: str) -> list[str]:
        athlete = _athlete(account)
        return [r.key for kind in ("access", "refresh") for r in records_of(NS, athlete, kind)]
