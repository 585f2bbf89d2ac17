"""Connecting a Google account where Google's answers differ from the happy path: userinfo
without `email_verified`, and a "Testing" app's refresh token expiring after 7 days. Run with the
first registered Google provider, through its own connect tests' hooks."""

from __future__ import annotations

import pytest

from ingestion.runner import connection_sync
from sources.models import UserDataSource
from sources.sandbox.faults import fault_set
from sources.sandbox.google import google_account_ensure
from tests.sources.browsing import Browser
from tests.sources.conftest import PASSWORD
from tests.sources.providers.kit import hooks

from .oauth import google_providers

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def google():
    return hooks(google_providers()[0].id)


@pytest.fixture
def browser(sandbox, person) -> Browser:
    browser = Browser(sandbox.url)
    browser.log_in(person.username, PASSWORD)
    return browser


def test_a_connect_needs_no_email_verified_claim(google, browser, person):
    # The claim is optional in OpenID Connect, and the account is linked, never signed in with.
    account = google.account()
    google_account_ensure(account)
    fault_set("google", account, "userinfo_unverified")
    page = google.consent(browser, account)
    assert f"{google.name} is connected" in page.text, page.text[:2000]
    connection = UserDataSource.objects.get(user=person)
    assert connection.status == UserDataSource.Status.ACTIVE
    assert connection.account_label == account


def test_a_testing_apps_expired_refresh_token_asks_to_reconnect(google, browser, person):
    connection, account = google.connect(browser, person)
    # Seven days on, Google ends the grant of an app whose consent screen is in "Testing".
    fault_set("google", account, "refresh_token_expired")
    connection.credentials = {**connection.credentials, "expires_at": 1}
    connection.save(update_fields=["credentials"])
    connection_sync(connection.pk)
    connection.refresh_from_db()
    assert connection.status == UserDataSource.Status.REAUTH_REQUIRED
    page = browser.get("/connections/").text
    card = page.split(f'data-provider="{google.provider_id}"', 1)[1].split("</li>", 1)[0]
    assert google.provider.reauth_message.replace("'", "&#x27;") in card
    assert "Reconnect" in card


def test_granted_scopes_are_read_from_the_token_response_in_their_expanded_form():
    from sources.pipeline import missing_scopes_described, scopes_granted

    provider = google_providers()[0]
    response = {"scope": f"openid email profile {' '.join(provider.scopes)}"}
    assert scopes_granted(provider, response) == [
        "openid",
        "https://www.googleapis.com/auth/userinfo.email",
        "https://www.googleapis.com/auth/userinfo.profile",
        *provider.scopes,
    ]
    assert provider.scope_expand("email") == "https://www.googleapis.com/auth/userinfo.email"
    assert scopes_granted(provider, {"scope": None}) == []
    assert scopes_granted(provider, {}) == []
    # A scope the provider describes is named in its words, any other as the scope itself.
    words = getattr(provider, "scope_descriptions", {})
    for scope in provider.scopes:
        assert missing_scopes_described(provider, [scope]) == [words.get(scope, scope)]
