"""What every provider's tests share: fixture files, providers picked from the registry, and one
test base per auth mode.

A provider's tests live in ``tests/sources/providers/<id>/``. Its connect, refresh, revoke and
error tests come from the base of its auth mode (as django-allauth's ``OAuth2TestsMixin``): the
test module subclasses the base, sets ``provider_id`` and fills in the few hooks that say how to
make the provider's sandbox misbehave::

    class TestConnect(OAuth2ProviderTests):
        provider_id = "<id>"

        def expire_access_token(self, account: str) -> None:
            ...  # the sandbox's fault for this provider

Generic tests (outside a provider's folder) never name a provider: they take one from the
registry with ``provider_for(...)``.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from functools import cached_property
from importlib import import_module
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urljoin

import bson
import pytest
import requests
from django.urls import reverse
from django.utils.html import escape
from social_django.models import UserSocialAuth

from sources.models import PendingRevocation, UserDataSource
from sources.providers import PROVIDERS, Provider, get_provider
from tests.factories import UserFactory
from tests.sources.browsing import Browser, forms_of
from tests.sources.conftest import PASSWORD

HERE = Path(__file__).resolve().parent
Status = UserDataSource.Status


# --- Fixture files and providers from the registry -----------------------------------------------


def fixture_path(provider_id: str, name: str) -> Path:
    return HERE / provider_id / "fixtures" / f"{name}.json"


def fixture(provider_id: str, name: str) -> Any:
    """A recorded payload: ``tests/sources/providers/<provider_id>/fixtures/<name>.json``."""
    return json.loads(fixture_path(provider_id, name).read_text())


def providers(**wanted: Any) -> list[type[Provider]]:
    """Registered providers, in registry order, whose declaration matches ``wanted``:
    ``auth_mode``, ``category``, ``webhooks`` (has a receiver at /webhooks/<id>/), ``periodic``
    (declares periodic work), ``refresh`` (its tokens expire and are refreshed), ``kind`` (a
    record kind one of its streams produces)."""

    def has(provider: type[Provider], name: str, value: Any) -> bool:
        if name == "webhooks":
            found = bool(provider.webhook_receiver_path)
        elif name == "periodic":
            found = bool(getattr(provider, "periodic", ()))
        elif name == "refresh":
            found = provider.auth_mode == "oauth2"
        elif name == "kind":
            return any(stream.kind == value for stream in provider.streams)
        else:
            found = getattr(provider, name)
        return found == value

    return [p for p in PROVIDERS.values() if all(has(p, k, v) for k, v in wanted.items())]


def provider_for(**wanted: Any) -> type[Provider]:
    """The first registered provider matching ``wanted`` (see ``providers``): a generic test's
    example of shared machinery, e.g. ``provider_for(auth_mode="api_key")``."""
    found = providers(**wanted)
    if not found:
        pytest.skip(f"no registered provider with {wanted}")
    return found[0]


def provider_with(**wanted: Any) -> type[Provider]:
    """``provider_for`` with capabilities as flags: ``provider_with(webhooks=True)``."""
    return provider_for(**wanted)


def hooks(provider_id: str) -> ProviderTests:
    """The provider's test hooks: an instance of the ``ProviderTests`` subclass in its
    ``tests/sources/providers/<id>/test_connect.py``."""
    module = import_module(f"tests.sources.providers.{provider_id}.test_connect")
    for value in vars(module).values():
        if (
            isinstance(value, type)
            and issubclass(value, ProviderTests)
            and getattr(value, "provider_id", "") == provider_id
        ):
            return value()
    raise LookupError(f"no ProviderTests subclass for {provider_id!r}")


def sandbox_connection(
    person: Any, provider: type[Provider] | None = None, **wanted: Any
) -> UserDataSource:
    """A connection of ``person`` made the real way against the sandbox (over HTTP: the
    ``sandbox`` fixture must be in use), to ``provider`` or the first one matching ``wanted``.
    Its ``sandbox_account`` names the account at the sandbox, for ``sandbox_fault``."""
    provider = provider or provider_for(**wanted)
    return hooks(provider.id).sandbox_connect(person)


def quarantine_reasons(raw_db: Any, person: Any, secret: str) -> list[str]:
    """The person's quarantine reasons as stored, once each quarantined document is checked:
    the item is ciphertext, and ``secret`` (a value of the item) appears nowhere in it."""
    from ingestion.models import QuarantinedItem

    documents = list(raw_db[QuarantinedItem._meta.db_table].find({"user_id": person.pk}))
    assert documents
    for document in documents:
        # The item itself is ciphertext; the reason is plaintext and must not carry the value.
        assert document["item"].subtype == 6
        assert secret.encode() not in bson.encode(document)
    return [d["reason"] for d in documents]


def processor_killed_on_page(provider: type[Provider], monkeypatch: Any, page: int = 2) -> None:
    """Make the provider's processor raise on its ``page``-th page, as a worker killed there
    would stop the sync; ``monkeypatch.undo()`` (or setting it back) lets the next sync finish."""
    processor = provider.processor()
    calls: list[str] = []

    def dies(stream: str, payload: Any) -> Any:
        calls.append(stream)
        if len(calls) == page:
            raise RuntimeError("worker killed")
        return processor(stream, payload)

    monkeypatch.setattr(provider, "processor", classmethod(lambda cls: dies))


def quota_met_then_freed(connection: UserDataSource, settings: Any, quotas: str) -> Any:
    """Sync with the sandbox enforcing ``quotas`` (``SIBLING_SANDBOX_QUOTAS``): the provider's
    over-limit answer defers the connection, which stays active; with quotas off again the next
    sync succeeds. Returns (the deferred run, the run that succeeded)."""
    from django.utils import timezone

    from ingestion.http import RetryPolicy
    from ingestion.models import SyncRun
    from ingestion.runner import connection_sync

    no_wait = RetryPolicy(sleep=lambda seconds: None)
    settings.SIBLING_SANDBOX_QUOTAS = quotas
    deferred = connection_sync(connection.pk, policy=no_wait)
    assert deferred.outcome == SyncRun.Outcome.DEFERRED, deferred.error_message
    fresh = UserDataSource.objects.get(pk=connection.pk)
    assert fresh.next_sync_at > timezone.now()
    assert fresh.status == UserDataSource.Status.ACTIVE
    settings.SIBLING_SANDBOX_QUOTAS = "off"
    done = connection_sync(connection.pk, policy=no_wait)
    assert done.outcome == SyncRun.Outcome.SUCCESS, done.error_message
    return deferred, done


def sandbox_fault(connection: UserDataSource, fault: str, count: int = 1) -> None:
    """Switch a sandbox fault on for the account behind a ``sandbox_connection``."""
    hooks(connection.provider).sandbox_fault(connection.sandbox_account, fault, count)


def sandbox_fault_clear(connection: UserDataSource) -> None:
    """Switch every sandbox fault of the account behind a ``sandbox_connection`` off."""
    hooks(connection.provider).sandbox_fault_clear(connection.sandbox_account)


# --- Shared checks --------------------------------------------------------------------------------


def stored_raw(raw_db: Any, connection: UserDataSource) -> dict[str, Any]:
    return raw_db[UserDataSource._meta.db_table].find_one({"_id": connection.pk})


def assert_ciphertext_only(raw_db: Any, connection: UserDataSource, secrets: list[str]) -> None:
    """The stored connection holds its credentials as ciphertext, and no secret in the clear."""
    raw = stored_raw(raw_db, connection)
    assert raw["credentials"].subtype == 6  # CSFLE ciphertext
    stored = bson.encode(raw)
    for secret in secrets:
        assert secret.encode() not in stored


def erasure_begin(person: Any) -> None:
    """The person's erasure has begun (and not finished): nothing more of theirs is stored."""
    from django.utils import timezone

    from ingestion.fence import erasure_subject
    from ingestion.models import ErasureRecord

    ErasureRecord.objects.create(
        subject=erasure_subject(person.pk), erased_at=timezone.now(), completed=False
    )


def token_refresh(provider: type[Provider], refresh_token: str) -> requests.Response:
    """Use a refresh token at the provider's token endpoint: is the grant still alive?"""
    client = provider.client_credentials()
    return requests.post(
        provider.url("token"),
        data={
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": client["client_id"],
            "client_secret": client["client_secret"],
        },
        timeout=30,
    )


def assert_grant_ended(provider: type[Provider], refresh_token: str) -> None:
    refused = token_refresh(provider, refresh_token)
    assert refused.status_code in (400, 401), refused.text
    assert refused.json().get("error") == "invalid_grant"


class ProviderTests:
    """What every base shares: the provider, a signed-in person's browser, a fresh account."""

    provider_id: ClassVar[str] = ""
    pytestmark: ClassVar[list] = [pytest.mark.django_db(transaction=True)]

    @cached_property
    def provider(self) -> type[Provider]:
        return get_provider(self.provider_id)

    @property
    def name(self) -> str:
        """The provider's name as a page shows it (HTML-escaped)."""
        return escape(self.provider.name)

    @pytest.fixture
    def browser(self, sandbox: Any, person: Any) -> Browser:
        browser = Browser(sandbox.url)
        browser.log_in(person.username, PASSWORD)
        return browser

    def connection_of(self, person: Any) -> UserDataSource:
        return UserDataSource.objects.get(user=person, provider=self.provider_id)

    def sandbox_connect(self, person: Any) -> UserDataSource:
        """A connection made against the sandbox without a browser, with ``sandbox_account``."""
        raise NotImplementedError

    def sandbox_fault(self, account: str, fault: str, count: int = 1) -> None:
        from sources.sandbox.faults import fault_set

        fault_set(self.provider_id, account, fault, count)

    def sandbox_fault_clear(self, account: str) -> None:
        from sources.sandbox.faults import fault_clear

        fault_clear(self.provider_id, account)

    def disconnect(self, browser: Browser, connection: UserDataSource, data: str = "keep") -> str:
        path = reverse("sources:disconnect", args=[connection.pk])
        return browser.post(path, {"data": data}).text

    def browser_connect(self, page: Any, card: Any) -> None:
        """Connect from the Connections page in a real browser (Playwright's ``page``, and the
        provider's card on it), as a person does; the browser test runs it for every provider."""
        raise NotImplementedError


# --- OAuth2 ---------------------------------------------------------------------------------------


class OAuth2ProviderTests(ProviderTests):
    """Connect through the sandbox's consent page and social-auth's complete view, refresh,
    revoke, and what an attacker or a refusing person meets.

    Hooks a provider's module fills in: ``expire_access_token``, ``fail_next_revocation``,
    ``grant_revoked`` and ``issued_tokens`` (what its sandbox holds for an account); optionally
    ``account``, ``consent_values`` and ``partial_scope_values``.
    """

    allow_button: ClassVar[str] = "Allow"
    deny_button: ClassVar[str] = "Deny"
    # Consent-form values granting less than every scope Sibling asks for.
    partial_scope_values: ClassVar[dict[str, str]] = {"scope": "openid email"}
    # Whether the consent page lets the person untick scopes one by one (Google's does).
    granular_consent: ClassVar[bool] = False

    # Hooks ---------------------------------------------------------------------------------------

    def account(self) -> str:
        """A new account at the provider's sandbox, as the person names it on the consent page."""
        return f"{self.provider_id}-{uuid.uuid4().hex[:8]}@example.com"

    def consent_values(self, form_fields: dict[str, str], account: str) -> dict[str, str]:
        """The consent form's values that say who consents (by default its email field)."""
        return {name: account for name in form_fields if "email" in name}

    def unticked_scope_values(self, form_fields: dict[str, str]) -> dict[str, str]:
        """The consent form's values that untick every scope the person may untick (for a
        provider with ``granular_consent``)."""
        return {}

    def expire_access_token(self, account: str) -> None:
        """Make every access token the sandbox issued to ``account`` expire now."""
        self.sandbox_fault(account, "expire_access_token")

    def fail_next_revocation(self, account: str) -> None:
        """Make the sandbox answer the next revocation for ``account`` with a 5xx."""
        self.sandbox_fault(account, "server_error")

    def sandbox_connect(self, person: Any) -> UserDataSource:
        from sources.sandbox.testing import google_credentials
        from sources.services import connection_upsert

        account = self.account()
        credentials = google_credentials(self.provider, account)
        connection = connection_upsert(
            user=person,
            provider=self.provider,
            external_account_id=self.provider.external_account_id(
                uid=account, credentials=credentials
            ),
            credentials=credentials,
            account_label=account,
        )
        connection.sandbox_account = account
        return connection

    def grant_revoked(self, account: str) -> bool:
        """Whether every grant the sandbox issued to ``account`` is revoked."""
        raise NotImplementedError

    def issued_tokens(self, account: str) -> list[str]:
        """Every token the sandbox issued to ``account`` (which must appear in no log)."""
        raise NotImplementedError

    def grant_ended(self, refresh_token: str) -> None:
        """Assert the provider refuses ``refresh_token`` now (RFC 6749's invalid_grant; a
        provider with its own error body overrides this)."""
        assert_grant_ended(self.provider, refresh_token)

    # The flow ------------------------------------------------------------------------------------

    def consent(
        self,
        browser: Browser,
        account: str,
        *,
        button: str = "",
        untick: bool = False,
        **values: str,
    ) -> requests.Response:
        """The connect flow as the person's browser runs it: begin, the consent page, the
        decision, social-auth's complete view; ends on the page the person lands on. ``untick``
        unticks every scope box of a granular consent page."""
        start = browser.post(
            reverse("social:begin", args=[self.provider_id]), allow_redirects=False
        )
        assert start.status_code == 302, start.status_code
        page = browser.session.get(start.headers["Location"], timeout=30)
        assert page.status_code == 200, page.text[:500]
        button = button or self.allow_button
        form = next(f for f in forms_of(page.text) if f.has_button(button))
        if untick:
            values = {**self.unticked_scope_values(form.fields), **values}
        data = form.submit_data(button, **self.consent_values(form.fields, account), **values)
        return browser.session.request(
            form.method.upper(), urljoin(page.url, form.action), data=data, timeout=30
        )

    def browser_connect(self, page: Any, card: Any, *, untick: bool = False) -> None:
        card.get_by_role("button", name=re.compile("Connect")).first.click()
        names = page.eval_on_selector_all(
            "form input[name]:not([type=hidden]):not([type=checkbox])",
            "inputs => inputs.map((i) => i.name)",
        )
        fields = {name: "" for name in names}
        for name, value in self.consent_values(fields, self.account()).items():
            page.locator(f'input[name="{name}"]').fill(value)
        if untick:
            self.browser_untick(page)
        page.get_by_role("button", name=self.allow_button).click()

    def browser_untick(self, page: Any) -> None:
        """Untick, on the consent page, every scope the person may untick (for a provider
        with ``granular_consent``)."""

    def connect(self, browser: Browser, person: Any) -> tuple[UserDataSource, str]:
        account = self.account()
        page = self.consent(browser, account)
        assert f"{self.name} is connected" in page.text, page.text[:2000]
        return self.connection_of(person), account

    # Tests ---------------------------------------------------------------------------------------

    def test_connect_keeps_its_tokens_encrypted_only(self, browser, person, raw_db, caplog):
        caplog.set_level(logging.DEBUG)
        account = self.account()
        page = self.consent(browser, account)
        assert page.url.endswith(reverse("sources:connections"))
        assert f"{self.name} is connected" in page.text

        connection = self.connection_of(person)
        assert connection.status == Status.ACTIVE and connection.sandbox
        assert set(self.provider.scopes) <= set(connection.granted_scopes)
        credentials = connection.credentials
        assert credentials["access_token"] and credentials["refresh_token"]  # offline access
        assert credentials["expires_at"] > 0
        secrets = [credentials["access_token"], credentials["refresh_token"]]
        assert_ciphertext_only(raw_db, connection, secrets)
        # social_django keeps the account link, never a token.
        social = UserSocialAuth.objects.get(user=person, provider=self.provider_id)
        assert not {"access_token", "refresh_token", "id_token"} & set(social.extra_data)
        for secret in secrets + self.issued_tokens(account):
            assert secret not in str(social.extra_data)
            assert secret not in caplog.text

    def test_the_connection_is_labelled_with_the_account_the_person_consented_as(
        self, browser, person
    ):
        # The Connections page names the account by what the provider tells of it (an email,
        # a username...), whichever provider it is.
        connection, account = self.connect(browser, person)
        assert connection.account_label == account

    def test_refused_consent_connects_nothing_and_is_logged_with_its_code(
        self, browser, person, caplog
    ):
        caplog.set_level(logging.INFO)
        page = self.consent(browser, self.account(), button=self.deny_button)
        assert page.url.endswith(reverse("sources:connections"))
        assert "cancelled" in page.text
        assert not UserDataSource.objects.filter(user=person).exists()
        assert not UserSocialAuth.objects.filter(user=person).exists()
        failed = f"connect of {self.provider_id} failed: AuthCanceled code=authorization_declined"
        assert failed in caplog.text and "provider_code=access_denied" in caplog.text

    def test_a_grant_missing_a_scope_is_refused_and_revoked(self, browser, person, caplog):
        caplog.set_level(logging.INFO)
        account = self.account()
        page = self.consent(browser, account, **self.partial_scope_values)
        assert f"{self.name}: Sibling needs every permission it asked for" in page.text
        assert not UserDataSource.objects.filter(user=person).exists()
        assert not UserSocialAuth.objects.filter(provider=self.provider_id).exists()
        assert self.grant_revoked(account)  # nothing Sibling obtained stays alive
        assert not PendingRevocation.objects.exists()
        assert f"connect of {self.provider_id} failed: AuthPolicyError code=scope_missing" in (
            caplog.text
        )
        for token in self.issued_tokens(account):
            assert token not in caplog.text

    def test_an_unticked_scope_is_named_on_the_page_with_connect_again(self, browser, person):
        from sources.pipeline import missing_scopes_described

        if not self.granular_consent:
            pytest.skip("the provider's consent page grants its scopes as a whole")
        account = self.account()
        page = self.consent(browser, account, untick=True)
        assert page.url.endswith(reverse("sources:connections"))
        assert f"{self.name}: Sibling needs every permission it asked for" in page.text
        # The page names, in words, each permission left unticked.
        missing = sorted({self.provider.scope_expand(s) for s in self.provider.scopes})
        words = "; ".join(missing_scopes_described(self.provider, missing))
        assert escape(f"Missing: {words}.") in page.text
        card = page.text.split(f'data-provider="{self.provider_id}"', 1)[1].split("</li>", 1)[0]
        assert "Connect again" in card
        assert not UserDataSource.objects.filter(user=person).exists()
        assert self.grant_revoked(account)
        # Connecting again with every box ticked works.
        assert f"{self.name} is connected" in self.consent(browser, account).text

    def test_an_expired_access_token_is_refreshed_and_saved_encrypted(
        self, browser, person, raw_db
    ):
        from ingestion.tokens import OAuthTokens

        connection, account = self.connect(browser, person)
        before = connection.credentials
        self.expire_access_token(account)
        # The sandbox says the old token expired; the connection's clock must say so too.
        connection.credentials = {**before, "expires_at": 1}
        connection.save(update_fields=["credentials"])
        tokens = OAuthTokens(UserDataSource.objects.get(pk=connection.pk))
        access_token = tokens.access_token()
        assert access_token != before["access_token"]
        saved = UserDataSource.objects.get(pk=connection.pk).credentials
        assert saved["access_token"] == access_token and saved["expires_at"] > 1
        assert_ciphertext_only(raw_db, connection, [access_token, saved["refresh_token"]])

    def test_a_refresh_the_provider_refuses_asks_to_reconnect(self, browser, person):
        from ingestion.errors import ReauthRequired
        from ingestion.tokens import OAuthTokens

        connection, _ = self.connect(browser, person)
        self.provider.revoke(connection.credentials)  # as when the person revokes at the provider
        with pytest.raises(ReauthRequired):
            OAuthTokens(connection).refresh()

    def test_disconnect_revokes_the_grant(self, browser, person):
        connection, _ = self.connect(browser, person)
        refresh_token = connection.credentials["refresh_token"]
        page = self.disconnect(browser, connection)
        assert f"{self.name} is disconnected." in page
        connection.refresh_from_db()
        assert connection.status == Status.DISCONNECTED and connection.credentials is None
        assert not UserSocialAuth.objects.filter(user=person, provider=self.provider_id).exists()
        assert not PendingRevocation.objects.exists()
        self.grant_ended(refresh_token)
        assert "Reconnect" in browser.get(reverse("sources:connections")).text

    def test_a_revocation_the_provider_does_not_confirm_is_kept_and_retried(
        self, browser, person, raw_db
    ):
        from sources.revocations import revocations_retry_due

        connection, account = self.connect(browser, person)
        refresh_token = connection.credentials["refresh_token"]
        self.fail_next_revocation(account)
        page = self.disconnect(browser, connection)
        assert f"{self.name} is disconnected." not in page
        assert f"{self.name} has not confirmed yet" in page
        assert f"Waiting for {self.name}." in page
        connection.refresh_from_db()
        assert connection.credentials is None
        assert token_refresh(self.provider, refresh_token).status_code == 200  # still alive

        pending = PendingRevocation.objects.get(user=person, provider=self.provider_id)
        raw = raw_db[PendingRevocation._meta.db_table].find_one({"_id": pending.pk})
        assert raw["token"].subtype == 6 and refresh_token.encode() not in bson.encode(raw)
        assert revocations_retry_due(now=pending.next_attempt_at) == 1
        assert not PendingRevocation.objects.exists()
        self.grant_ended(refresh_token)
        assert "Waiting for" not in browser.get(reverse("sources:connections")).text

    def test_disconnect_when_the_provider_cannot_be_reached_still_forgets_the_credentials(
        self, browser, person, settings
    ):
        connection, _ = self.connect(browser, person)
        settings.SIBLING_SANDBOX_BASE_URL = "http://127.0.0.1:9/sandbox"  # nothing listens
        page = self.disconnect(browser, connection)
        assert f"{self.name} has not confirmed yet" in page
        connection.refresh_from_db()
        assert connection.status == Status.DISCONNECTED and connection.credentials is None
        pending = PendingRevocation.objects.get(user=person)
        assert pending.last_error == "ConnectionError" and pending.connection_id == connection.pk

    def test_an_account_connected_by_someone_else_is_refused_and_left_working(
        self, sandbox, browser, person
    ):
        first, account = self.connect(browser, person)
        other = UserFactory()
        second = Browser(sandbox.url)
        second.log_in(other.username, PASSWORD)
        page = self.consent(second, account)
        assert "already connected to another Sibling account" in page.text
        assert not UserDataSource.objects.filter(user=other).exists()
        # The refusal revoked nothing the first person's connection holds.
        refreshed = token_refresh(self.provider, first.credentials["refresh_token"])
        assert refreshed.status_code == 200, refreshed.text

    def test_a_connect_whose_connection_cannot_be_stored_revokes_what_it_obtained(
        self, browser, person, caplog, monkeypatch
    ):
        from django.db import DatabaseError

        def refuse(**kwargs: Any) -> None:
            raise DatabaseError("the write was refused")

        monkeypatch.setattr("sources.pipeline.connection_upsert", refuse)
        caplog.set_level(logging.INFO)
        account = self.account()
        page = self.consent(browser, account)
        assert f"{self.name}: The account could not be saved" in page.text
        assert self.grant_revoked(account)
        assert "AuthException code=connection_not_stored stage=pipeline" in caplog.text
        for token in self.issued_tokens(account):
            assert token not in caplog.text

    def test_a_connect_while_the_person_is_being_erased_is_refused_and_revoked(
        self, browser, person
    ):
        erasure_begin(person)
        account = self.account()
        page = self.consent(browser, account)
        assert page.status_code == 200
        assert f"{self.name}: The account could not be saved" in page.text
        assert not UserDataSource.objects.exists() and not UserSocialAuth.objects.exists()
        assert self.grant_revoked(account)
        assert not PendingRevocation.objects.exists()  # no new ciphertext of an erased person

    def test_an_attackers_forged_state_is_refused(self, browser, person):
        # The person's session holds a real state; the attacker's callback carries another.
        browser.post(reverse("social:begin", args=[self.provider_id]), allow_redirects=False)
        complete = reverse("social:complete", args=[self.provider_id])
        page = browser.get(f"{complete}?code=stolen-code&state=forged-state")
        assert page.url.endswith(reverse("sources:connections"))
        assert f"{self.name}: The sign-in" in page.text and "Please try again." in page.text
        assert not UserDataSource.objects.exists() and not UserSocialAuth.objects.exists()

    def test_a_connect_without_a_signed_in_person_connects_nothing(self, sandbox):
        anonymous = Browser(sandbox.url)
        anonymous.post(reverse("social:begin", args=[self.provider_id]), allow_redirects=True)
        complete = reverse("social:complete", args=[self.provider_id])
        anonymous.get(f"{complete}?code=stolen-code&state=forged-state")
        assert not UserDataSource.objects.exists() and not UserSocialAuth.objects.exists()


# --- API key --------------------------------------------------------------------------------------


class ApiKeyProviderTests(ProviderTests):
    """A key checked at the provider before it is stored encrypted; disconnect forgets it.

    Hooks: ``good_key`` (a key the sandbox accepts) and ``bad_key`` (one it refuses).
    """

    bad_key: ClassVar[str] = "not-a-real-key"
    refused_text: ClassVar[str] = "did not accept this key"

    def good_key(self) -> str:
        return f"sandbox-{uuid.uuid4().hex[:12]}"

    def sandbox_connect(self, person: Any) -> UserDataSource:
        from sources.services import connection_upsert

        key = self.good_key()
        connection = connection_upsert(
            user=person,
            provider=self.provider,
            external_account_id=self.provider.external_account_id_for_key(key),
            credentials={"api_key": key},
        )
        connection.sandbox_account = key
        return connection

    def connect_path(self) -> str:
        return reverse("sources:connect", args=[self.provider_id])

    def browser_connect(self, page: Any, card: Any) -> None:
        card.get_by_role("link", name=re.compile("Connect")).click()
        page.get_by_label("API key").fill(self.good_key())
        page.get_by_role("button", name=f"Connect {self.provider.name}").click()

    def connect(self, browser: Browser, person: Any) -> tuple[UserDataSource, str]:
        key = self.good_key()
        page = browser.post(self.connect_path(), {"api_key": key})
        assert f"{self.name} is connected" in page.text, page.text[:2000]
        return self.connection_of(person), key

    def test_a_good_key_connects_and_is_stored_encrypted_only(
        self, browser, person, raw_db, caplog
    ):
        caplog.set_level(logging.DEBUG)
        key = self.good_key()
        page = browser.post(self.connect_path(), {"api_key": key})
        assert page.url.endswith(reverse("sources:connections"))
        assert f"{self.name} is connected" in page.text
        connection = self.connection_of(person)
        assert connection.status == Status.ACTIVE and connection.sandbox
        assert connection.credentials == {"api_key": key}
        assert key not in connection.external_account_id and key not in connection.account_label
        assert_ciphertext_only(raw_db, connection, [key])
        assert key not in caplog.text

    def test_a_bad_key_is_refused_with_a_clear_message(self, browser, person, caplog):
        caplog.set_level(logging.DEBUG)
        page = browser.post(self.connect_path(), {"api_key": self.bad_key})
        assert page.status_code == 200 and self.refused_text in page.text
        assert not UserDataSource.objects.filter(user=person).exists()
        assert self.bad_key not in caplog.text

    def test_an_empty_key_is_refused_without_asking_the_provider(self, browser, person):
        page = browser.post(self.connect_path(), {"api_key": ""})
        assert page.status_code == 200 and "required" in page.text
        assert not UserDataSource.objects.filter(user=person).exists()

    def test_a_key_connect_while_the_person_is_being_erased_stores_nothing(self, browser, person):
        erasure_begin(person)
        key = self.good_key()
        page = browser.post(self.connect_path(), {"api_key": key})
        assert page.status_code == 200 and "could not be saved" in page.text
        assert not UserDataSource.objects.exists()

    def test_disconnect_forgets_the_key(self, browser, person):
        connection, _ = self.connect(browser, person)
        page = self.disconnect(browser, connection)
        assert f"{self.name} is disconnected." in page
        connection.refresh_from_db()
        assert connection.status == Status.DISCONNECTED and connection.credentials is None
        assert not PendingRevocation.objects.exists()  # a key has nothing to revoke

    def test_the_key_form_needs_a_signed_in_person(self, sandbox):
        anonymous = Browser(sandbox.url)
        page = anonymous.post(self.connect_path(), {"api_key": self.good_key()})
        assert "/login/" in page.url
        assert not UserDataSource.objects.exists()


# --- Hosted link (a provider's own widget hands over a public token) ------------------------------


class HostedLinkProviderTests(ProviderTests):
    """A link token for the provider's widget, the public token exchanged, removal on disconnect.

    Hooks: ``public_token`` (what the widget does in the sandbox with a link token),
    ``credentials_work`` (whether the provider still accepts stored credentials) and
    ``fail_next_removal`` (the sandbox answers the next removal with a 5xx).
    """

    def public_token(self, link_token: str) -> str:
        raise NotImplementedError

    def sandbox_connect(self, person: Any) -> UserDataSource:
        from sources.services import connection_upsert

        provider = self.provider
        public_token = self.public_token(provider.link_token_create(client_user_id=str(person.pk)))
        linked = provider.link_exchange(public_token, {})
        connection = connection_upsert(
            user=person,
            provider=provider,
            external_account_id=linked.external_account_id,
            credentials=linked.credentials,
            account_label=linked.account_label,
        )
        connection.sandbox_account = linked.external_account_id
        return connection

    def credentials_work(self, credentials: dict[str, Any]) -> bool:
        raise NotImplementedError

    def browser_widget(self, dialog: Any) -> None:
        """What the person does in the provider's widget (its sandbox imitation) in a real
        browser, given the widget's dialog, until it hands over a public token."""
        raise NotImplementedError

    def browser_connect(self, page: Any, card: Any) -> None:
        card.get_by_role("link", name=re.compile("Connect")).click()
        page.get_by_role("button", name=self.provider.link_button).click()
        self.browser_widget(page.get_by_role("dialog"))

    def fail_next_removal(self, connection: UserDataSource) -> None:
        self.sandbox_fault(connection.external_account_id, "server_error")

    exchange_body_extra: ClassVar[dict[str, Any]] = {}

    def link_token(self, browser: Browser) -> str:
        answer = browser.post_json(reverse("sources:link_token", args=[self.provider_id]), {})
        assert answer.status_code == 200, answer.text
        return answer.json()["link_token"]

    def exchange(self, browser: Browser, public_token: str) -> requests.Response:
        path = reverse("sources:link_exchange", args=[self.provider_id])
        return browser.post_json(path, {"public_token": public_token, **self.exchange_body_extra})

    def connect(self, browser: Browser, person: Any, sandbox: Any) -> UserDataSource:
        public_token = self.public_token(self.link_token(browser))
        assert self.exchange(browser, public_token).status_code == 200
        return self.connection_of(person)

    def test_the_connect_page_loads_the_providers_widget(self, browser):
        page = browser.get(reverse("sources:connect", args=[self.provider_id]))
        assert page.status_code == 200
        assert escape(self.provider.url("link_script")) in page.text

    def test_link_token_then_exchange_stores_the_token_encrypted_only(
        self, browser, sandbox, person, raw_db, caplog
    ):
        caplog.set_level(logging.DEBUG)
        public_token = self.public_token(self.link_token(browser))
        answer = self.exchange(browser, public_token)
        assert answer.status_code == 200, answer.text
        assert answer.json()["redirect"] == reverse("sources:connections")
        connection = self.connection_of(person)
        assert connection.status == Status.ACTIVE and connection.sandbox
        secrets = [
            str(connection.credentials[f])
            for f in self.provider.secret_fields
            if connection.credentials.get(f)
        ]
        assert secrets
        assert_ciphertext_only(raw_db, connection, secrets)
        for secret in secrets:
            assert secret not in caplog.text
        # A public token is single use.
        again = self.exchange(browser, public_token)
        assert again.status_code != 200
        assert UserDataSource.objects.filter(user=person).count() == 1

    @pytest.mark.parametrize(
        "body",
        [b"{not json", b"[]", b'{"public_token": null}', b'{"public_token": ""}', b"{}"],
        ids=["malformed", "a-list", "null", "empty", "missing"],
    )
    def test_a_forged_exchange_body_is_refused_with_400(self, browser, person, body):
        response = browser.session.post(
            urljoin(browser.base, reverse("sources:link_exchange", args=[self.provider_id])),
            data=body,
            headers={"X-CSRFToken": browser.csrf, "Content-Type": "application/json"},
            timeout=30,
        )
        assert response.status_code == 400 and "error" in response.json()
        assert not UserDataSource.objects.filter(user=person).exists()

    def test_an_exchange_while_the_person_is_being_erased_stores_nothing_and_removes_the_link(
        self, browser, sandbox, person, monkeypatch
    ):
        obtained = []
        exchange = self.provider.link_exchange

        def exchange_kept(public_token: str, metadata: dict[str, Any]) -> Any:
            obtained.append(exchange(public_token, metadata))
            return obtained[-1]

        monkeypatch.setattr(self.provider, "link_exchange", exchange_kept)
        public_token = self.public_token(self.link_token(browser))
        erasure_begin(person)
        answer = self.exchange(browser, public_token)
        assert answer.status_code == 503 and "could not be saved" in answer.json()["error"]
        assert not UserDataSource.objects.exists()
        # What the exchange obtained is withdrawn at once: nobody keeps it.
        assert obtained and not self.credentials_work(obtained[0].credentials)
        assert not PendingRevocation.objects.exists()  # no new ciphertext of an erased person

    def test_link_steps_need_a_signed_in_person(self, sandbox):
        anonymous = Browser(sandbox.url)
        for name in ("sources:link_token", "sources:link_exchange"):
            answer = anonymous.post_json(reverse(name, args=[self.provider_id]), {})
            assert answer.status_code != 200 or "/login/" in answer.url
        assert not UserDataSource.objects.exists()

    def test_disconnect_deleting_data_removes_the_link_at_the_provider(
        self, browser, sandbox, person
    ):
        connection = self.connect(browser, person, sandbox)
        credentials = connection.credentials
        page = self.disconnect(browser, connection, data="delete")
        assert f"{self.name} is disconnected and 0 records from it were deleted" in page
        assert not UserDataSource.objects.filter(pk=connection.pk).exists()
        assert not PendingRevocation.objects.exists()
        assert not self.credentials_work(credentials)

    def test_an_unconfirmed_removal_is_kept_said_and_retried(self, browser, sandbox, person):
        from sources.revocations import revocations_retry_due

        connection = self.connect(browser, person, sandbox)
        credentials = connection.credentials
        self.fail_next_removal(connection)
        page = self.disconnect(browser, connection, data="delete")
        assert "deleted 0 records from it" in page
        assert f"{self.name} has not confirmed yet" in page
        assert not UserDataSource.objects.filter(pk=connection.pk).exists()
        pending = PendingRevocation.objects.get(user=person, provider=self.provider_id)
        assert pending.connection_id is None
        assert f"Waiting for {self.name}." in browser.get(reverse("sources:connections")).text
        assert self.credentials_work(credentials)
        assert revocations_retry_due(now=pending.next_attempt_at) == 1
        assert "Waiting for" not in browser.get(reverse("sources:connections")).text
        assert not self.credentials_work(credentials)
