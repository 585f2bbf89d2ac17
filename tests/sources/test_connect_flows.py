"""Each connect flow end to end against the sandbox over real HTTP, and disconnect with revoke."""

import logging
from urllib.parse import urljoin

import bson
import pytest
import requests
from django.db import DatabaseError
from django.utils import timezone
from social_django.models import UserSocialAuth

from ingestion.fence import erasure_subject
from ingestion.models import ErasureRecord
from sources.models import PendingRevocation, UserDataSource
from sources.providers.fitbit import Fitbit
from sources.providers.gmail import Gmail
from sources.revocations import revocations_retry_due
from sources.sandbox.faults import fault_set
from sources.sandbox.google import google_account_ensure
from sources.sandbox.models import GoogleAccessToken, GoogleGrant
from sources.sandbox.testing import google_refresh
from tests.factories import UserFactory
from tests.sources.browsing import Browser, forms_of
from tests.sources.conftest import PASSWORD

pytestmark = pytest.mark.django_db(transaction=True)
Status = UserDataSource.Status


@pytest.fixture
def browser(sandbox, person):
    browser = Browser(sandbox.url)
    browser.log_in(person.username, PASSWORD)
    return browser


def _raw(raw_db, connection):
    return raw_db[UserDataSource._meta.db_table].find_one({"_id": connection.pk})


def _assert_ciphertext_only(raw_db, connection, secrets):
    raw = _raw(raw_db, connection)
    assert raw["credentials"].subtype == 6
    stored = bson.encode(raw)
    for secret in secrets:
        assert secret.encode() not in stored


def test_gmail_connects_with_offline_access_and_keeps_tokens_encrypted_only(
    browser, person, raw_db
):
    page = browser.google_connect("gmail", email="ada.mail@example.com")
    assert page.url.endswith("/connections/")
    assert "Gmail is connected" in page.text

    connection = UserDataSource.objects.get(user=person, provider="gmail")
    assert connection.status == Status.ACTIVE and connection.sandbox
    assert connection.account_label == "ada.mail@example.com"
    assert Gmail.scopes[0] in connection.granted_scopes
    credentials = connection.credentials
    assert credentials["access_token"] and credentials["refresh_token"]  # offline + consent
    assert credentials["expires_at"] > 0
    _assert_ciphertext_only(
        raw_db, connection, [credentials["access_token"], credentials["refresh_token"]]
    )
    social = UserSocialAuth.objects.get(user=person, provider="gmail")
    assert not {"access_token", "refresh_token", "id_token"} & set(social.extra_data)
    assert credentials["refresh_token"] not in str(social.extra_data)


def test_one_google_account_is_linked_for_gmail_and_fitbit(browser, person):
    browser.google_connect("gmail", email="both@example.com")
    page = browser.google_connect("fitbit", email="both@example.com")
    assert "Fitbit is connected" in page.text
    gmail = UserDataSource.objects.get(user=person, provider="gmail")
    fitbit = UserDataSource.objects.get(user=person, provider="fitbit")
    assert {s.provider for s in UserSocialAuth.objects.filter(user=person)} == {"gmail", "fitbit"}
    assert set(Fitbit.scopes) <= set(fitbit.granted_scopes)
    assert not set(Fitbit.scopes) & set(gmail.granted_scopes)
    # Google Health names the person by healthUserId, which webhooks will use.
    identity = requests.get(
        f"{Fitbit.url('api')}/users/me/identity",
        headers={"Authorization": f"Bearer {fitbit.credentials['access_token']}"},
        timeout=10,
    ).json()
    assert fitbit.external_account_id == str(identity["healthUserId"])


def test_an_account_already_connected_by_someone_else_is_refused_clearly(sandbox, browser):
    browser.google_connect("gmail", email="shared@example.com")
    other = UserFactory()
    second = Browser(sandbox.url)
    second.log_in(other.username, PASSWORD)
    page = second.google_connect("gmail", email="shared@example.com")
    assert "already connected to another Sibling account" in page.text
    assert not UserDataSource.objects.filter(user=other).exists()
    # Google keeps one grant per account and client: revoking the refused one would end the
    # first person's too, so it is left alone.
    assert not GoogleGrant.objects.filter(email="shared@example.com", revoked=True).exists()


def test_denying_consent_connects_nothing(browser, person):
    page = browser.google_connect("gmail", decision="Deny")
    assert page.url.endswith("/connections/")
    assert "cancelled" in page.text
    assert not UserDataSource.objects.filter(user=person).exists()


def test_a_forged_oauth_state_is_refused(browser, person):
    browser.post("/connect/login/gmail/", allow_redirects=False)  # a real state in the session
    page = browser.get("/connect/complete/gmail/?code=stolen-code&state=forged-state")
    assert page.url.endswith("/connections/")
    assert "Gmail: The sign-in" in page.text and "Please try again." in page.text
    assert not UserDataSource.objects.filter(user=person).exists()


def test_connect_flow_without_a_signed_in_person_is_refused(sandbox):
    anonymous = Browser(sandbox.url)
    response = anonymous.post("/connect/login/gmail/", allow_redirects=True)
    assert "/login/" in response.url or not UserSocialAuth.objects.exists()
    assert not UserDataSource.objects.exists()


def test_rescuetime_key_is_checked_then_stored_encrypted(browser, person, raw_db):
    refused = browser.post("/connections/rescuetime/", {"api_key": "not-a-real-key"})
    assert "did not accept this key" in refused.text
    assert not UserDataSource.objects.filter(user=person).exists()

    page = browser.post("/connections/rescuetime/", {"api_key": "sandbox-ada-key-123"})
    assert page.url.endswith("/connections/") and "RescueTime is connected" in page.text
    connection = UserDataSource.objects.get(user=person, provider="rescuetime")
    assert connection.credentials == {"api_key": "sandbox-ada-key-123"}
    assert "sandbox-ada-key-123" not in connection.external_account_id
    _assert_ciphertext_only(raw_db, connection, ["sandbox-ada-key-123"])


def _plaid_link(browser, sandbox):
    """What Plaid Link's script does on the page: link token, the bank picked, public token."""
    link_token = browser.post_json("/connections/plaid/link-token/", {}).json()["link_token"]
    public = requests.post(
        f"{sandbox.url}/sandbox/plaid/link/public_token/create",
        json={"link_token": link_token, "institution_id": "ins_sandbox_first"},
        timeout=10,
    )
    assert public.status_code == 200, public.text
    return public.json()["public_token"]


def test_plaid_link_exchanges_the_public_token_and_stores_the_access_token_encrypted(
    browser, sandbox, person, raw_db
):
    public_token = _plaid_link(browser, sandbox)
    answer = browser.post_json(
        "/connections/plaid/exchange/",
        {"public_token": public_token, "institution": {"name": "First Sandbox Bank"}},
    )
    assert answer.status_code == 200 and answer.json()["redirect"] == "/connections/"
    connection = UserDataSource.objects.get(user=person, provider="plaid")
    assert connection.account_label == "First Sandbox Bank"
    assert connection.credentials["access_token"].startswith("access-sandbox-")
    assert connection.external_account_id == connection.credentials["item_id"]
    _assert_ciphertext_only(raw_db, connection, [connection.credentials["access_token"]])
    # A public token is single use.
    again = browser.post_json("/connections/plaid/exchange/", {"public_token": public_token})
    assert again.status_code == 502
    assert UserDataSource.objects.filter(user=person).count() == 1


def test_plaid_exchange_rejects_a_malformed_body(browser):
    response = browser.session.post(
        f"{browser.base}/connections/plaid/exchange/",
        data=b"{not json",
        headers={"X-CSRFToken": browser.csrf, "Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 400


def test_disconnect_keeping_data_revokes_the_google_grant(browser, person):
    browser.google_connect("gmail", email="leaving@example.com")
    connection = UserDataSource.objects.get(user=person, provider="gmail")
    refresh_token = connection.credentials["refresh_token"]

    page = browser.post(f"/connections/{connection.pk}/disconnect/", {"data": "keep"})
    assert "Gmail is disconnected" in page.text
    connection.refresh_from_db()
    assert connection.status == Status.DISCONNECTED and connection.credentials is None
    assert not UserSocialAuth.objects.filter(user=person, provider="gmail").exists()
    refreshed = _refresh(refresh_token)
    assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant"
    assert "Reconnect" in browser.get("/connections/").text


def test_disconnect_deleting_data_removes_the_plaid_item_and_the_connection(
    browser, sandbox, person
):
    public_token = _plaid_link(browser, sandbox)
    browser.post_json("/connections/plaid/exchange/", {"public_token": public_token})
    connection = UserDataSource.objects.get(user=person, provider="plaid")
    access_token = connection.credentials["access_token"]

    page = browser.post(f"/connections/{connection.pk}/disconnect/", {"data": "delete"})
    assert "disconnected and 0 records from it were deleted" in page.text
    assert not UserDataSource.objects.filter(pk=connection.pk).exists()
    after = requests.post(
        f"{sandbox.url}/sandbox/plaid/transactions/sync",
        json={
            "client_id": "sandbox-plaid-client",
            "secret": "sandbox-plaid-secret",
            "access_token": access_token,
        },
        timeout=10,
    )
    assert after.status_code == 400


def test_disconnect_when_the_provider_cannot_be_reached_still_forgets_the_credentials(
    browser, person, settings
):
    browser.google_connect("gmail", email="offline@example.com")
    connection = UserDataSource.objects.get(user=person, provider="gmail")
    settings.SIBLING_SANDBOX_BASE_URL = "http://127.0.0.1:9/sandbox"  # nothing listens there
    page = browser.post(f"/connections/{connection.pk}/disconnect/", {"data": "keep"})
    assert "Gmail has not confirmed yet" in page.text
    connection.refresh_from_db()
    assert connection.status == Status.DISCONNECTED and connection.credentials is None
    pending = PendingRevocation.objects.get(user=person)
    assert pending.last_error == "ConnectionError" and pending.connection_id == connection.pk


def _refresh(refresh_token: str) -> requests.Response:
    return google_refresh(Gmail, refresh_token)


def test_a_revocation_google_does_not_confirm_is_shown_kept_and_retried_until_it_is(
    browser, person, raw_db
):
    browser.google_connect("gmail", email="unconfirmed@example.com")
    connection = UserDataSource.objects.get(user=person, provider="gmail")
    refresh_token = connection.credentials["refresh_token"]
    fault_set("google", "unconfirmed@example.com", "server_error")  # the revoke answers 503

    page = browser.post(f"/connections/{connection.pk}/disconnect/", {"data": "keep"})
    # Not "disconnected" and nothing more: the person is told the grant may be alive.
    assert "Gmail is disconnected." not in page.text
    assert "Gmail has not confirmed yet that Sibling&#x27;s access is withdrawn" in page.text
    assert "Waiting for Gmail." in page.text  # the card says so too, until it is confirmed
    connection.refresh_from_db()
    assert connection.credentials is None
    assert _refresh(refresh_token).status_code == 200  # the grant is indeed still alive

    pending = PendingRevocation.objects.get(user=person)
    raw = raw_db[PendingRevocation._meta.db_table].find_one({"_id": pending.pk})
    assert raw["token"].subtype == 6 and refresh_token.encode() not in bson.encode(raw)
    assert "503" in raw["last_error"]

    assert revocations_retry_due(now=pending.next_attempt_at) == 1
    assert not PendingRevocation.objects.exists()
    refused = _refresh(refresh_token)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    assert "Waiting for Gmail" not in browser.get("/connections/").text


def test_deleting_the_data_keeps_the_unconfirmed_plaid_removal_and_says_so(
    browser, sandbox, person
):
    public_token = _plaid_link(browser, sandbox)
    browser.post_json("/connections/plaid/exchange/", {"public_token": public_token})
    connection = UserDataSource.objects.get(user=person, provider="plaid")
    fault_set("plaid", connection.external_account_id, "server_error")

    page = browser.post(f"/connections/{connection.pk}/disconnect/", {"data": "delete"})
    assert "deleted 0 records from it" in page.text
    assert "Bank (Plaid) has not confirmed yet" in page.text
    assert not UserDataSource.objects.filter(pk=connection.pk).exists()
    pending = PendingRevocation.objects.get(user=person, provider="plaid")
    assert pending.connection_id is None and pending.last_error == "INTERNAL_SERVER_ERROR"
    assert "Waiting for Bank (Plaid)." in browser.get("/connections/").text

    assert revocations_retry_due(now=pending.next_attempt_at) == 1
    assert "Waiting for" not in browser.get("/connections/").text


# --- A refused connect: logged with its reason and code, its tokens revoked -----------------------


def _consent(browser, provider_id: str, *, email: str, **values: str):
    """The connect flow as a person's browser runs it, with form values of our choosing."""
    start = browser.post(f"/connect/login/{provider_id}/", allow_redirects=False)
    consent = browser.session.get(start.headers["Location"], timeout=30)
    form = next(f for f in forms_of(consent.text) if f.has_button("Allow"))
    return browser.session.post(
        urljoin(consent.url, form.action),
        data=form.submit_data("Allow", email=email, **values),
        timeout=30,
    )


def _tokens_of(email: str) -> list[str]:
    grants = GoogleGrant.objects.filter(email=email)
    access = GoogleAccessToken.objects.filter(email=email)
    return [g.refresh_token for g in grants] + [a.token for a in access]


def test_a_connect_without_every_scope_is_refused_logged_and_its_grant_revoked(
    browser, person, caplog
):
    caplog.set_level(logging.INFO)
    page = _consent(browser, "gmail", email="partial@example.com", scope="openid email")
    assert "Gmail: Sibling needs every permission it asked for" in page.text
    assert not UserDataSource.objects.filter(user=person).exists()
    grant = GoogleGrant.objects.get(email="partial@example.com")
    assert grant.revoked  # nothing Sibling keeps stays alive at Google
    assert not PendingRevocation.objects.exists()
    assert "connect of gmail failed: AuthPolicyError code=scope_missing" in caplog.text
    for token in _tokens_of("partial@example.com"):
        assert token not in caplog.text


def test_a_refused_connect_leaves_the_account_linked_to_nobody(sandbox, browser, person):
    _consent(browser, "gmail", email="unlinked@example.com", scope="openid email")
    assert not UserSocialAuth.objects.filter(provider="gmail").exists()
    # So another Sibling account can connect it: nothing was connected, nothing is claimed.
    other = UserFactory()
    second = Browser(sandbox.url)
    second.log_in(other.username, PASSWORD)
    page = second.google_connect("gmail", email="unlinked@example.com")
    assert "Gmail is connected" in page.text
    assert UserSocialAuth.objects.get(provider="gmail").user == other
    # A refused reconnect of an account already connected keeps that connection's link, and
    # its grant: Google has one grant per account and client, shared by both attempts.
    _consent(second, "gmail", email="unlinked@example.com", scope="openid email")
    assert UserSocialAuth.objects.get(provider="gmail").user == other
    grants = GoogleGrant.objects.filter(email="unlinked@example.com").order_by("pk")
    # The first, refused connect's grant was revoked; the reconnect's was not (at Google it is
    # the working connection's grant).
    assert [grant.revoked for grant in grants] == [True, False, False]
    assert UserDataSource.objects.get(user=other).status == UserDataSource.Status.ACTIVE


def test_a_connect_whose_connection_cannot_be_stored_revokes_what_it_obtained(
    browser, person, caplog, monkeypatch
):
    def refuse(**kwargs):
        raise DatabaseError("the write was refused")

    monkeypatch.setattr("sources.pipeline.connection_upsert", refuse)
    caplog.set_level(logging.INFO)
    page = _consent(browser, "gmail", email="unstored@example.com")
    assert "Gmail: The account could not be saved" in page.text
    assert GoogleGrant.objects.get(email="unstored@example.com").revoked
    assert "AuthException code=connection_not_stored stage=pipeline" in caplog.text
    for token in _tokens_of("unstored@example.com"):
        assert token not in caplog.text


def test_a_connect_while_the_person_is_being_erased_is_refused_and_revoked(browser, person):
    ErasureRecord.objects.create(
        subject=erasure_subject(person.pk), erased_at=timezone.now(), completed=False
    )
    page = _consent(browser, "gmail", email="erasing@example.com")
    assert page.status_code == 200 and "Gmail: The account could not be saved" in page.text
    assert not UserDataSource.objects.exists() and not UserSocialAuth.objects.exists()
    assert GoogleGrant.objects.get(email="erasing@example.com").revoked
    assert not PendingRevocation.objects.exists()  # no new ciphertext of an erased person


def test_a_refused_connect_whose_revocation_fails_keeps_it_pending(browser, person, caplog):
    caplog.set_level(logging.INFO)
    google_account_ensure("flaky@example.com")
    # Google fails twice: the user info after the token exchange, then the revocation.
    fault_set("google", "flaky@example.com", "server_error", count=2)
    page = _consent(browser, "gmail", email="flaky@example.com")
    assert "Gmail: The provider could not be reached" in page.text
    assert "AuthProviderError code=unavailable stage=user_info provider_code=500" in caplog.text
    assert not GoogleGrant.objects.get(email="flaky@example.com").revoked
    pending = PendingRevocation.objects.get(user=person)
    assert pending.connection_id is None and pending.provider == "gmail"
    assert "Waiting for Gmail." in browser.get("/connections/").text
    assert revocations_retry_due(now=pending.next_attempt_at) == 1
    assert GoogleGrant.objects.get(email="flaky@example.com").revoked
    for token in _tokens_of("flaky@example.com"):
        assert token not in caplog.text


def test_the_provider_error_code_of_a_failed_connect_is_logged(browser, person, caplog):
    caplog.set_level(logging.INFO)
    page = browser.google_connect("gmail", decision="Deny")
    assert "cancelled" in page.text
    assert "connect of gmail failed: AuthCanceled code=authorization_declined" in caplog.text
    assert "provider_code=access_denied" in caplog.text


def test_connecting_starts_the_first_sync_at_once(browser, person, settings):
    settings.SIBLING_SYNC_ON_DUE = True  # tasks run inline in tests, so the sync ends here
    browser.post("/connections/rescuetime/", {"api_key": "sandbox-eager-key"})
    connection = UserDataSource.objects.get(user=person, provider="rescuetime")
    assert connection.last_success_at is not None and connection.records_stored > 0
    assert connection.runs.get().trigger == "backfill"
    page = browser.get("/connections/").text
    assert f"<dd>{connection.records_stored}</dd>" in page
