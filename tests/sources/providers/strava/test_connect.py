"""Strava's connect, refresh, revoke and error tests, from the OAuth2 base."""

from __future__ import annotations

import copy
from typing import Any

import bson
import pytest
from django.urls import reverse

import tests.sources.providers.kit as kit
from sources.models import PendingRevocation, UserDataSource
from sources.providers.strava.sandbox import NS, athlete_id_for
from sources.sandbox.faults import fault_set
from sources.sandbox.store import record_live, records_of
from tests.factories import UserFactory
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

    def test_an_athlete_past_the_applications_cap_connects_nothing_and_is_told(
        self, browser, person, settings, caplog
    ):
        settings.STRAVA_SANDBOX_ATHLETE_CAP = 1
        strava_connect(UserFactory())  # the application's one athlete
        page = self.consent(browser, self.account())
        assert page.status_code == 200 and page.url.endswith(reverse("sources:connections"))
        assert "Strava: The account could not be connected." in page.text
        assert not UserDataSource.objects.filter(user=person).exists()
        assert "connect of strava failed" in caplog.text and "status=403" in caplog.text


def _deauthorize_unreachable(settings) -> dict:
    """Strava's token endpoint answers; its deauthorization endpoint cannot be reached."""
    original = settings.SIBLING_PROVIDERS
    providers = copy.deepcopy(original)
    urls = providers["strava"]["urls"]
    providers["strava"]["urls"] = {**urls, "revoke": "http://127.0.0.1:9/oauth/deauthorize"}
    settings.SIBLING_PROVIDERS = providers
    return original


@pytest.mark.django_db(transaction=True)
def test_a_deauthorization_failing_after_the_refresh_keeps_the_rotated_refresh_token(
    sandbox, person, settings, raw_db
):
    from sources.revocations import revocations_retry_due
    from sources.services import connection_disconnect

    connection = strava_connect(person)
    athlete = connection.sandbox_account
    spent = connection.credentials["refresh_token"]
    original = _deauthorize_unreachable(settings)
    result = connection_disconnect(connection=connection, delete_data=False)
    assert not result.revoked and result.revocation_pending
    pending = PendingRevocation.objects.get(user=person)
    # The refresh before the deauthorization spent the stored token: the new one is kept.
    assert pending.last_error == "ConnectionError" and pending.token_type_hint == "refresh_token"
    kept = pending.token
    assert kept != spent and kept in {r.key for r in records_of(NS, athlete, "refresh")}
    raw = raw_db[PendingRevocation._meta.db_table].find_one({"_id": pending.pk})
    assert raw["token"].subtype == 6 and kept.encode() not in bson.encode(raw)

    # A retry that fails the same way keeps the token its own refresh returned.
    assert revocations_retry_due(now=pending.next_attempt_at) == 0
    pending.refresh_from_db()
    assert pending.attempts == 2 and pending.token not in (kept, spent)

    # Strava answers again: the grant really ends, nothing of it is left alive.
    settings.SIBLING_PROVIDERS = original
    assert revocations_retry_due(now=pending.next_attempt_at) == 1
    assert not PendingRevocation.objects.exists()
    assert not any(
        record_live(r) for kind in ("access", "refresh") for r in records_of(NS, athlete, kind)
    )
