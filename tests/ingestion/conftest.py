"""Connections made the real way against the sandbox (over HTTP), ready to sync."""

import time
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from ingestion.http import RetryPolicy
from sources.models import UserDataSource
from sources.providers.fitbit import Fitbit
from sources.providers.plaid import Plaid
from sources.services import connection_upsert, oauth_credentials_from
from tests.factories import UserFactory
from tests.sources.browsing import forms_of

NO_WAIT = RetryPolicy(sleep=lambda seconds: None)


@pytest.fixture
def sandbox(live_server, settings):
    settings.SIBLING_SANDBOX_BASE_URL = f"{live_server.url}/sandbox"
    settings.SIBLING_BACKFILL_DAYS = 14
    return live_server


@pytest.fixture
def person(db):
    return UserFactory()


def google_credentials(provider, email: str) -> dict:
    """The authorization-code flow against the sandbox, as the connect page runs it."""
    client = provider.client_credentials()
    redirect_uri = "http://127.0.0.1/callback"
    session = requests.Session()
    consent = session.get(
        provider.url("authorize"),
        params={
            "client_id": client["client_id"],
            "redirect_uri": redirect_uri,
            "response_type": "code",
            "scope": " ".join(("openid", "email", *provider.scopes)),
            "state": "s",
            "access_type": "offline",
            "prompt": "consent",
        },
        timeout=10,
    )
    form = next(f for f in forms_of(consent.text) if f.has_button("Allow"))
    email_field = next(name for name in form.fields if "email" in name)
    answer = session.post(
        requests.compat.urljoin(consent.url, form.action),
        data=form.submit_data("Allow", **{email_field: email}),
        allow_redirects=False,
        timeout=10,
    )
    code = parse_qs(urlsplit(answer.headers["Location"]).query)["code"][0]
    token = requests.post(
        provider.url("token"),
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": client["client_id"],
            "client_secret": client["client_secret"],
        },
        timeout=10,
    ).json()
    return oauth_credentials_from(token, uid=email)


@pytest.fixture
def fitbit_connection(sandbox, person):
    email = f"fit-{uuid.uuid4().hex[:8]}@example.com"
    credentials = google_credentials(Fitbit, email)
    connection = connection_upsert(
        user=person,
        provider=Fitbit,
        external_account_id=Fitbit.external_account_id(uid=email, credentials=credentials),
        credentials=credentials,
        account_label=email,
    )
    connection.sandbox_account = email
    return connection


@pytest.fixture
def plaid_connection(sandbox, person):
    link_token = Plaid.link_token_create(client_user_id=str(person.pk))
    public = requests.post(
        f"{sandbox.url}/sandbox/plaid/link/public_token/create",
        json={"link_token": link_token, "institution_id": "ins_sandbox_first"},
        timeout=10,
    ).json()["public_token"]
    exchanged = Plaid.public_token_exchange(public)
    connection = connection_upsert(
        user=person,
        provider=Plaid,
        external_account_id=exchanged["item_id"],
        credentials=exchanged,
        account_label="First Sandbox Bank",
    )
    connection.sandbox_account = exchanged["item_id"]
    return connection


@pytest.fixture
def rescuetime_connection(sandbox, person):
    from sources.providers.rescuetime import RescueTime

    key = f"sandbox-{uuid.uuid4().hex[:12]}"
    connection = connection_upsert(
        user=person,
        provider=RescueTime,
        external_account_id=RescueTime.external_account_id_for_key(key),
        credentials={"api_key": key},
    )
    connection.sandbox_account = key
    return connection


def fresh(connection: UserDataSource) -> UserDataSource:
    return UserDataSource.objects.get(pk=connection.pk)


def wait_until(predicate, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
