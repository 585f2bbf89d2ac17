"""Field-level encryption, proven on the raw documents MongoDB holds."""

import bson
import pytest
from bson import Binary

from sibling import encryption
from sibling.encryption import (
    WrongOwnerError,
    data_key_alt_name,
    data_key_id,
    key_vault_collection,
    value_decrypt,
    value_encrypt,
)
from sibling.fields import PlaintextWriteError, encrypted_lookup
from tests.factories import UserFactory
from tests.testapp.models import Vault

pytestmark = pytest.mark.django_db

SECRET_TEXT = "sandbox-refresh-token-of-person-a"


def _raw(raw_db, obj):
    return raw_db[Vault._meta.db_table].find_one({"_id": obj.pk})


@pytest.fixture
def person_a():
    return UserFactory()


@pytest.fixture
def person_b():
    return UserFactory()


@pytest.mark.parametrize(
    "value",
    [
        SECRET_TEXT,
        123456789,
        3.25,
        {"access_token": SECRET_TEXT, "expires_in": 3599, "scopes": ["a", "b"]},
        ["first-secret-item", {"nested": "second-secret-item"}],
    ],
    ids=["str", "int", "float", "dict", "list"],
)
def test_encrypted_field_stores_only_ciphertext_and_round_trips(raw_db, person_a, value):
    vault = Vault.objects.create(user=person_a, secret=value, handle="acct-0001")

    raw = _raw(raw_db, vault)
    for name in ("secret", "handle"):
        assert isinstance(raw[name], Binary) and raw[name].subtype == 6
    stored = bson.encode(raw)
    for plaintext in ("refresh-token-of-person-a", "secret-item", "acct-0001"):
        assert plaintext.encode() not in stored
    assert Vault.objects.get(pk=vault.pk).secret == value
    assert Vault.objects.get(pk=vault.pk).handle == "acct-0001"


def test_values_are_readable_after_update(person_a):
    vault = Vault.objects.create(user=person_a, secret="first")
    vault.secret = {"rotated": True}
    vault.save()
    assert Vault.objects.get(pk=vault.pk).secret == {"rotated": True}


def test_deterministic_field_is_found_by_equality_for_its_owner_only(person_a, person_b):
    mine = Vault.objects.create(user=person_a, handle="acct-42")
    Vault.objects.create(user=person_a, handle="acct-43")
    Vault.objects.create(user=person_b, handle="acct-42")

    found = Vault.objects.filter(handle=encrypted_lookup("acct-42", owner_id=person_a.pk))
    assert [v.pk for v in found] == [mine.pk]
    # The same value under another person's key is another ciphertext.
    assert encrypted_lookup("acct-42", owner_id=person_a.pk) != encrypted_lookup(
        "acct-42", owner_id=person_b.pk
    )


def test_random_encryption_hides_equal_values(person_a):
    assert value_encrypt("same", owner_id=person_a.pk) != value_encrypt(
        "same", owner_id=person_a.pk
    )


def test_a_value_of_person_a_is_not_readable_as_person_b(raw_db, person_a, person_b):
    data_key_id(person_b.pk)  # person B has a key of their own
    vault = Vault.objects.create(user=person_a, secret=SECRET_TEXT)
    ciphertext = _raw(raw_db, vault)["secret"]

    with pytest.raises(WrongOwnerError) as excinfo:
        value_decrypt(ciphertext, owner_id=person_b.pk)
    assert SECRET_TEXT not in str(excinfo.value)
    assert value_decrypt(ciphertext, owner_id=person_a.pk) == SECRET_TEXT


def test_one_data_key_per_person_created_on_first_use(person_a):
    name = data_key_alt_name(person_a.pk)
    assert key_vault_collection().count_documents({"keyAltNames": name}) == 0
    for n in range(3):
        Vault.objects.create(user=person_a, secret=f"value {n}")
    encryption.data_key_forget(person_a.pk)  # a fresh process finds it by keyAltName
    value_encrypt("again", owner_id=person_a.pk)
    assert key_vault_collection().count_documents({"keyAltNames": name}) == 1


def test_key_vault_has_the_unique_partial_index():
    encryption.key_vault_ensure_index()
    index = key_vault_collection().index_information()["keyAltNames_unique"]
    assert index["unique"] is True
    assert index["partialFilterExpression"] == {"keyAltNames": {"$exists": True}}


def test_plaintext_cannot_bypass_encryption_through_update(raw_db, person_a):
    vault = Vault.objects.create(user=person_a, secret="original")
    with pytest.raises(PlaintextWriteError):
        Vault.objects.filter(pk=vault.pk).update(secret="leaked in plaintext")
    assert _raw(raw_db, vault)["secret"].subtype == 6
    assert Vault.objects.get(pk=vault.pk).secret == "original"


def test_an_owner_is_required_to_encrypt():
    orphan = Vault(secret="orphan")
    with pytest.raises(PlaintextWriteError):
        Vault._meta.get_field("secret").pre_save(orphan, add=True)


def test_direct_pymongo_writes_use_the_same_functions(raw_db, person_a):
    """Code that writes through pymongo (bulk writes) encrypts with the plain functions."""
    collection = raw_db[Vault._meta.db_table]
    result = collection.insert_one(
        {
            "user_id": person_a.pk,
            "label": "bulk",
            "secret": value_encrypt({"amount": 12.5}, owner_id=person_a.pk),
            "handle": value_encrypt("acct-bulk", owner_id=person_a.pk, deterministic=True),
        }
    )
    vault = Vault.objects.get(pk=result.inserted_id)
    assert vault.secret == {"amount": 12.5}
    assert vault.handle == "acct-bulk"
