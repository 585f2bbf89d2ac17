"""Plaid's /item/remove against the sandbox over HTTP: only Plaid's documented success, or an
Item already gone, counts as removed."""

import pytest

from sources.providers.base import RevocationError
from sources.providers.plaid import Plaid
from sources.sandbox.faults import fault_set
from tests.sources.providers.kit import hooks

pytestmark = pytest.mark.django_db(transaction=True)
CLIENT = {"client_id": "generic client", "secret": "s3cret:&="}


def _linked(person) -> dict:
    return hooks("plaid").sandbox_connect(person).credentials


def test_removal_failure_then_success_then_already_gone(sandbox, person):
    exchanged = _linked(person)
    fault_set("plaid", exchanged["item_id"], "server_error")
    with pytest.raises(RevocationError) as caught:
        Plaid.revoke(exchanged)
    assert caught.value.code == "INTERNAL_SERVER_ERROR"
    assert exchanged["access_token"] not in f"{caught.value} {caught.value.code}"
    Plaid.revoke(exchanged)
    Plaid.revoke(exchanged)  # INVALID_ACCESS_TOKEN: the Item is already gone


def test_refusing_the_client_is_not_a_removal(sandbox, person, monkeypatch):
    exchanged = _linked(person)
    monkeypatch.setattr(
        Plaid, "client_credentials", classmethod(lambda cls: {**CLIENT, "secret": "wrong"})
    )
    with pytest.raises(RevocationError) as caught:
        Plaid.revoke(exchanged)
    assert caught.value.code == "INVALID_API_KEYS"
