"""manage.py rotate_master_key: every data key re-wrapped, the old master key no longer needed,
the data untouched and still readable."""

import stat
import uuid
from io import StringIO

import pytest
from bson import ObjectId
from django.core.management import call_command
from pymongo.encryption import ClientEncryption
from pymongo.errors import EncryptionError

from sibling import encryption, mongo
from sibling.encryption import (
    CODEC_OPTIONS,
    data_key_create,
    key_vault_collection,
    value_encrypt,
)
from sibling.master_key import master_key_decode


def _forget_encryption_state():
    mongo.process_local_forget("client_encryption")
    encryption._key_ids.clear()


@pytest.fixture
def own_key_vault(settings):
    """A key vault of this test's own: rotating it must not touch the session's keys."""
    settings.SIBLING_KEY_VAULT_NAMESPACE = f"test_rotation_{uuid.uuid4().hex[:8]}.__keyVault"
    _forget_encryption_state()
    yield settings.SIBLING_KEY_VAULT_NAMESPACE
    key_vault_collection().database.client.drop_database(key_vault_collection().database.name)
    _forget_encryption_state()


def test_rotation_rewraps_every_data_key_under_the_new_master_key(
    own_key_vault, settings, tmp_path
):
    people = [ObjectId(), ObjectId()]
    for person in people:
        data_key_create(person)  # as connecting an account does
    stored = {
        person: value_encrypt({"token": f"secret of {person}"}, owner_id=person)
        for person in people
    }
    before = {d["_id"]: d["keyMaterial"] for d in key_vault_collection().find()}

    out = StringIO()
    key_file = tmp_path / "next.key"
    call_command(
        "rotate_master_key",
        "--to-provider",
        "local:next",
        "--new-key-file",
        str(key_file),
        stdout=out,
    )

    assert "2 of 2 data keys re-wrapped under local:next" in out.getvalue()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    after = {d["_id"]: d for d in key_vault_collection().find()}
    assert after.keys() == before.keys()  # the same data keys, so the same ciphertext
    assert all(after[k]["keyMaterial"] != before[k] for k in before)
    assert {d["masterKey"]["provider"] for d in after.values()} == {"local:next"}

    client = mongo.plain_client()
    new_only = ClientEncryption(
        {"local:next": {"key": master_key_decode(key_file.read_text(), source="test")}},
        own_key_vault,
        client,
        CODEC_OPTIONS,
    )
    for person, ciphertext in stored.items():
        assert new_only.decrypt(ciphertext) == {"token": f"secret of {person}"}
    old_only = ClientEncryption(
        settings.SIBLING_KMS_PROVIDERS, own_key_vault, client, CODEC_OPTIONS
    )
    with pytest.raises(EncryptionError):
        old_only.decrypt(stored[people[0]])


def test_rotation_to_the_same_provider_name_is_refused(own_key_vault, tmp_path):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="must differ"):
        call_command(
            "rotate_master_key", "--to-provider", "local", "--new-key-file", str(tmp_path / "k")
        )
