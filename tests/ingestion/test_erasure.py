"""Delete all my data: grants revoked, every trace deleted, the data key destroyed, so that no
document anywhere holds the person's plaintext and what ciphertext is left cannot be read."""

import bson
import pytest
import requests
from django.urls import reverse
from pymongo.encryption import ClientEncryption
from pymongo.errors import EncryptionError

from ingestion.authentication import api_token_create
from ingestion.erasure import erasure_subject
from ingestion.events import events_accept
from ingestion.models import ErasureRecord
from ingestion.runner import connection_sync
from sibling.encryption import CODEC_OPTIONS, data_key_alt_name, key_vault_collection
from sibling.mongo import plain_client, plain_database
from sources.models import UserDataSource
from sources.providers.plaid import Plaid
from sources.sandbox.faults import fault_set
from tests.ingestion.conftest import NO_WAIT, fresh
from tests.sources.conftest import PASSWORD

pytestmark = pytest.mark.django_db(transaction=True)


def _documents_mentioning(user_id, needles: list[bytes]) -> list[tuple[str, dict]]:
    database = plain_database()
    found = []
    for name in database.list_collection_names():
        if name.startswith("sandbox_"):
            continue  # the imitated providers' own state: at a real provider, not in Sibling
        for document in database[name].find():
            encoded = bson.encode(document)
            if bson.encode({"v": user_id})[4:-1][1:] in encoded or any(
                n in encoded for n in needles
            ):
                found.append((name, document.get("_id")))
    return found


def test_delete_all_my_data(client, plaid_connection, rescuetime_connection, person, settings):
    settings.SIBLING_SYNC_ON_DUE = False
    connection_sync(plaid_connection.pk, policy=NO_WAIT)
    fault_set("rescuetime", rescuetime_connection.sandbox_account, "malformed")
    connection_sync(rescuetime_connection.pk, policy=NO_WAIT)
    api_token_create(user=person, name="phone")
    events_accept(
        user=person,
        events=[
            {
                "id": "mood-1",
                "kind": "note",
                "occurred_at": "2026-11-20T08:00:00Z",
                "data": {"text": "a very private thought"},
            }
        ],
    )
    record = plain_database()["external_data"].find_one({"user": person.pk})
    leftover_ciphertext = record["sealed"]  # as if a backup kept it
    names = [t["name"].encode() for t in _sandbox_transactions(plaid_connection)][:20]
    access_token = fresh(plaid_connection).credentials["access_token"]
    email = person.email.encode()

    client.force_login(person, backend="django.contrib.auth.backends.ModelBackend")
    refused = client.post(reverse("ingestion:privacy"), {"confirm": "yes", "password": PASSWORD})
    assert refused.status_code == 200 and UserDataSource.objects.filter(user=person).exists()
    page = client.post(
        reverse("ingestion:privacy"), {"confirm": "delete my data", "password": PASSWORD}
    )
    assert page.status_code == 200 and "Your data was deleted" in page.content.decode()

    # Nothing anywhere names the person or holds their plaintext.
    needles = [email, b"a very private thought", access_token.encode(), *names]
    assert _documents_mentioning(person.pk, needles) == []
    assert (
        key_vault_collection().count_documents({"keyAltNames": data_key_alt_name(person.pk)}) == 0
    )
    # A copy of their ciphertext cannot be decrypted by any process that starts now.
    fresh_process = ClientEncryption(
        settings.SIBLING_KMS_PROVIDERS,
        settings.SIBLING_KEY_VAULT_NAMESPACE,
        plain_client(),
        CODEC_OPTIONS,
    )
    with pytest.raises(EncryptionError):
        fresh_process.decrypt(leftover_ciphertext)
    # The bank link was withdrawn at Plaid.
    after = requests.post(
        f"{Plaid.url('api')}/transactions/sync",
        json={
            "client_id": "sandbox-plaid-client",
            "secret": "sandbox-plaid-secret",
            "access_token": access_token,
        },
        timeout=10,
    )
    assert after.status_code == 400
    # The erasure is recorded, without personal data.
    erasure = ErasureRecord.objects.get()
    assert erasure.subject == erasure_subject(person.pk) and erasure.key_destroyed
    assert erasure.counts["connections"] == 2 and erasure.counts["records"] > 0
    assert erasure.counts["sync_runs"] == 2 and erasure.counts["quarantined"] > 0
    assert client.get(reverse("sources:connections")).status_code == 302  # signed out


def _sandbox_transactions(connection):
    body = requests.post(
        f"{Plaid.url('api')}/transactions/sync",
        json={
            "client_id": "sandbox-plaid-client",
            "secret": "sandbox-plaid-secret",
            "access_token": fresh(connection).credentials["access_token"],
            "count": 100,
        },
        timeout=10,
    ).json()
    return body["added"]
