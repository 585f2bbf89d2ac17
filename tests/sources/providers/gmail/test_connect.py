"""Gmail's connect, refresh, revoke and error tests, from the OAuth2 base; then what Google's
one grant per account and client means for a refused connect."""

import logging

from social_django.models import UserSocialAuth

from sources.models import PendingRevocation, UserDataSource
from sources.revocations import revocations_retry_due
from sources.sandbox.faults import fault_set
from sources.sandbox.google import google_account_ensure
from sources.sandbox.models import GoogleGrant
from tests.factories import UserFactory
from tests.sources.browsing import Browser
from tests.sources.conftest import PASSWORD
from tests.sources.providers.google import GoogleSandboxHooks
from tests.sources.providers.kit import OAuth2ProviderTests


class TestGmailConnect(GoogleSandboxHooks, OAuth2ProviderTests):
    provider_id = "gmail"

    def test_a_refused_connect_leaves_the_account_linked_to_nobody(self, sandbox, browser):
        account = self.account()
        self.consent(browser, account, **self.partial_scope_values)
        assert not UserSocialAuth.objects.filter(provider=self.provider_id).exists()
        # So another Sibling account can connect it: nothing was connected, nothing is claimed.
        other = UserFactory()
        second = Browser(sandbox.url)
        second.log_in(other.username, PASSWORD)
        assert f"{self.name} is connected" in self.consent(second, account).text
        assert UserSocialAuth.objects.get(provider=self.provider_id).user == other
        # A refused reconnect of an account already connected keeps that connection's link, and
        # its grant: Google has one grant per account and client, shared by both attempts.
        self.consent(second, account, **self.partial_scope_values)
        assert UserSocialAuth.objects.get(provider=self.provider_id).user == other
        grants = GoogleGrant.objects.filter(email=account).order_by("pk")
        # The first, refused connect's grant was revoked; the reconnect's was not (at Google it
        # is the working connection's grant).
        assert [grant.revoked for grant in grants] == [True, False, False]
        assert UserDataSource.objects.get(user=other).status == UserDataSource.Status.ACTIVE

    def test_a_refused_connect_whose_revocation_fails_keeps_it_pending(
        self, browser, person, caplog
    ):
        caplog.set_level(logging.INFO)
        account = self.account()
        google_account_ensure(account)
        # Google fails twice: the user info after the token exchange, then the revocation.
        fault_set("google", account, "server_error", count=2)
        page = self.consent(browser, account)
        assert f"{self.name}: The provider could not be reached" in page.text
        assert "AuthProviderError code=unavailable stage=user_info provider_code=server_error" in (
            caplog.text
        )
        assert not self.grant_revoked(account)
        pending = PendingRevocation.objects.get(user=person)
        assert pending.connection_id is None and pending.provider == self.provider_id
        assert f"Waiting for {self.name}." in browser.get("/connections/").text
        assert revocations_retry_due(now=pending.next_attempt_at) == 1
        assert self.grant_revoked(account)
        for token in self.issued_tokens(account):
            assert token not in caplog.text
