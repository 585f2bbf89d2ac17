"""Plaid's Link, exchange and removal tests, from the hosted-link base."""

from __future__ import annotations

from typing import Any

import requests

from sources.providers import get_provider
from tests.sources.providers.kit import HostedLinkProviderTests


class TestPlaidConnect(HostedLinkProviderTests):
    provider_id = "plaid"
    # What Link's onSuccess hands the page beside the public token.
    exchange_body_extra = {"metadata": {"institution": {"name": "First Sandbox Bank"}}}

    def public_token(self, link_token: str) -> str:
        # What Plaid Link's script does on the page: the bank picked, a public token.
        public = requests.post(
            f"{get_provider(self.provider_id).url('api')}/link/public_token/create",
            json={"link_token": link_token, "institution_id": "ins_sandbox_first"},
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
