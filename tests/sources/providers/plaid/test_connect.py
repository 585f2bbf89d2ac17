"""Plaid's Link, exchange and removal tests, from the hosted-link base."""

from __future__ import annotations

from typing import Any

import requests
from django.conf import settings
from django.urls import reverse

from sources.models import UserDataSource
from sources.providers import get_provider
from sources.providers.plaid.sandbox.api import LINK_TOKEN_KIND, STORE
from sources.sandbox.store import record_get
from tests.factories import UserFactory
from tests.ingestion.conftest import fresh, sync
from tests.sources.providers.kit import HostedLinkProviderTests

Status = UserDataSource.Status


class TestPlaidConnect(HostedLinkProviderTests):
    provider_id = "plaid"
    # What Link's onSuccess hands the page beside the public token.
    exchange_body_extra = {"metadata": {"institution": {"name": "First Sandbox Bank"}}}

    def public_token(self, link_token: str) -> str:
        # Link itself runs in the person's browser; its result in Plaid's sandbox is an Item
        # made with /sandbox/public_token/create (a call that exists at Plaid), with the
        # webhook and history the link token asked for.
        provider = get_provider(self.provider_id)
        public = requests.post(
            f"{provider.url('api')}/sandbox/public_token/create",
            json={
                **provider.client_credentials(),
                "institution_id": "ins_sandbox_first",
                "initial_products": ["transactions"],
                "options": {
                    "webhook": f"{settings.SIBLING_PUBLIC_URL}/webhooks/{self.provider_id}/",
                    "transactions": {"days_requested": settings.SIBLING_BACKFILL_DAYS},
                },
            },
            timeout=30,
        )
        assert public.status_code == 200, public.text
        return public.json()["public_token"]

    def browser_widget(self, dialog: Any) -> None:
        dialog.get_by_label("First Sandbox Bank").check()
        dialog.get_by_role("button", name="Continue").click()

    def credentials_work(self, credentials: dict[str, Any]) -> bool:
        provider = get_provider(self.provider_id)
        client = provider.client_credentials()
        answer = requests.post(
            f"{provider.url('api')}/item/get",
            json={**client, "access_token": credentials["access_token"]},
            timeout=30,
        )
        return answer.status_code == 200

    def test_the_connection_is_labelled_with_the_institution_link_picked(self, browser, person):
        public_token = self.public_token(self.link_token(browser))
        answer = self.exchange(browser, public_token)
        assert answer.status_code == 200, answer.text
        connection = self.connection_of(person)
        assert connection.account_label == "First Sandbox Bank"
        # The account is the Item Plaid named, never anything the browser sent.
        assert connection.external_account_id == connection.credentials["item_id"]

    # --- Reconnect: Link's update mode on the same Item ------------------------------------------

    def update_mode_link(self, link_token: str) -> requests.Response:
        # What the sandbox's Link imitation does in the browser when the person continues in
        # update mode (Plaid has no API for it: Link itself talks to Plaid).
        return requests.post(
            f"{get_provider(self.provider_id).url('api')}/_link/public_token/create",
            json={"link_token": link_token, "institution_id": "ins_sandbox_first"},
            timeout=30,
        )

    def test_reconnect_signs_in_again_on_the_same_item(self, browser, sandbox, person):
        connection = self.sandbox_connect(person)
        item_id, token = connection.external_account_id, connection.credentials["access_token"]
        self.sandbox_fault(item_id, "revoke")
        assert sync(connection).outcome == "failed"
        assert fresh(connection).status == Status.REAUTH_REQUIRED

        cards = browser.get(reverse("sources:connections")).text
        connect = reverse("sources:connect", args=[self.provider_id])
        assert f"{connect}?connection={connection.pk}" in cards
        page = browser.get(f"{connect}?connection={connection.pk}")
        assert page.status_code == 200 and "Reconnect" in page.text
        answer = browser.post_json(
            reverse("sources:link_token", args=[self.provider_id]),
            {"connection": str(connection.pk)},
        )
        assert answer.status_code == 200, answer.text
        link = record_get(STORE, LINK_TOKEN_KIND, answer.json()["link_token"])
        assert link.data["item_id"] == item_id  # update mode: the token names the Item
        public = self.update_mode_link(answer.json()["link_token"])
        assert public.status_code == 200, public.text
        done = browser.post_json(
            reverse("sources:link_exchange", args=[self.provider_id]),
            {"public_token": public.json()["public_token"], "connection": str(connection.pk)},
        )
        assert done.status_code == 200, done.text

        after = fresh(connection)
        assert after.status == Status.ACTIVE and after.last_error == ""
        # The same Item and the same access token: no new Item, no second connection.
        assert after.external_account_id == item_id
        assert after.credentials["access_token"] == token
        assert UserDataSource.objects.filter(user=person).count() == 1
        assert sync(after).outcome == "success"

    def test_reconnect_with_the_bank_still_refusing_keeps_the_connection_as_it_was(
        self, browser, sandbox, person
    ):
        connection = self.sandbox_connect(person)
        self.sandbox_fault(connection.external_account_id, "revoke")
        sync(connection)
        link = browser.post_json(
            reverse("sources:link_token", args=[self.provider_id]),
            {"connection": str(connection.pk)},
        ).json()["link_token"]
        # The person closed Link; the page is sent a public token from elsewhere.
        other = self.public_token(link)
        answer = browser.post_json(
            reverse("sources:link_exchange", args=[self.provider_id]),
            {"public_token": other, "connection": str(connection.pk)},
        )
        assert answer.status_code == 502
        assert fresh(connection).status == Status.REAUTH_REQUIRED

    def test_an_attacker_cannot_reconnect_someone_elses_connection(self, browser, sandbox, person):
        victim = UserFactory()
        theirs = self.sandbox_connect(victim)
        before = fresh(theirs).credentials
        for path in ("sources:link_token", "sources:link_exchange"):
            answer = browser.post_json(
                reverse(path, args=[self.provider_id]),
                {"public_token": "public-sandbox-x", "connection": str(theirs.pk)},
            )
            assert answer.status_code == 404, path
        page = browser.get(
            f"{reverse('sources:connect', args=[self.provider_id])}?connection={theirs.pk}"
        )
        assert "Reconnect" not in page.text.split("<h1>")[1].split("</h1>")[0]
        assert fresh(theirs).credentials == before
        assert not UserDataSource.objects.filter(user=person).exists()
