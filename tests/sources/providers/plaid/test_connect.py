"""Plaid's Link, exchange and removal tests, from the hosted-link base."""

from __future__ import annotations

from typing import Any

import requests
from django.conf import settings

from sources.providers import get_provider
from tests.sources.providers.kit import HostedLinkProviderTests


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
