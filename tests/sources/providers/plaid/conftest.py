"""Plaid's sandbox in tests: its API called as a client does, and an item linked through Link."""

from __future__ import annotations

import pytest

from tests.sources.sandbox.recorder import recorder  # noqa: F401 - a fixture for this folder

PLAID_CLIENT = {"client_id": "sandbox-plaid-client", "secret": "sandbox-plaid-secret"}


def plaid_post(client, path: str, body: dict, *, auth: bool = True):
    payload = {**PLAID_CLIENT, **body} if auth else body
    return client.post(f"/sandbox/plaid/{path}", payload, content_type="application/json")


def plaid_link(
    client,
    institution_id: str = "ins_sandbox_first",
    webhook: str = "",
    days_requested: int | None = None,
) -> dict:
    """An Item made as with Plaid's sandbox: /sandbox/public_token/create, then the exchange."""
    options: dict = {"webhook": webhook} if webhook else {}
    if days_requested is not None:
        options["transactions"] = {"days_requested": days_requested}
    public = plaid_post(
        client,
        "sandbox/public_token/create",
        {
            "institution_id": institution_id,
            "initial_products": ["transactions"],
            "options": options,
        },
    )
    assert public.status_code == 200, public.content
    exchanged = plaid_post(
        client, "item/public_token/exchange", {"public_token": public.json()["public_token"]}
    ).json()
    return exchanged


def link_imitation(client, institution_id: str = "ins_sandbox_first", webhook: str = "") -> dict:
    """Link token -> public token from the sandbox's Link imitation (its own `_link/` call, as
    its script makes it in a browser) -> exchange."""
    link = plaid_post(
        client,
        "link/token/create",
        {
            "client_name": "Sibling",
            "language": "en",
            "country_codes": ["US"],
            "user": {"client_user_id": "person-1"},
            "products": ["transactions"],
            "webhook": webhook,
        },
    ).json()
    public = plaid_post(
        client,
        "_link/public_token/create",
        {"link_token": link["link_token"], "institution_id": institution_id},
        auth=False,
    ).json()
    exchanged = plaid_post(
        client, "item/public_token/exchange", {"public_token": public["public_token"]}
    ).json()
    return {**exchanged, "link_token": link["link_token"], "metadata": public["metadata"]}


@pytest.fixture
def plaid_item(client) -> dict:
    """An Item with six months of history."""
    return plaid_link(client, days_requested=182)
