"""Field-level encryption, proven on the raw documents MongoDB holds."""

import bson
import pytest
from bson import Binary
from django.utils import timezone

from ingestion.errors import PersonErased
from ingestion.fence import data_key_ensure, erasure_subject
from ingestion.models import ErasureRecord
from sibling import encryption
from sibling.encryption import (
    NoDataKey,
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


def _connected_person():
    """A person as connecting an account leaves them: with a data key."""
    person = UserFactory()
    data_key_ensure(person.pk)
    return person


@pytest.fixture
def person_a():
    return _connected_person()


@pytest.fixture
def person_b():
    return _connected_person()


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
    assert data_key_id(person_b.pk) is not None  # person B has a key of their own
    vault = Vault.objects.create(user=person_a, secret=SECRET_TEXT)
    ciphertext = _raw(raw_db, vault)["secret"]

    with pytest.raises(WrongOwnerError) as excinfo:
        value_decrypt(ciphertext, owner_id=person_b.pk)
    assert SECRET_TEXT not in str(excinfo.value)
    assert value_decrypt(ciphertext, owner_id=person_a.pk) == SECRET_TEXT


def test_a_person_key_is_created_on_purpose_only_and_once(raw_db):
    person = UserFactory()
    name = data_key_alt_name(person.pk)
    # Encrypting never creates a person's key: a write racing their erasure must fail instead.
    with pytest.raises(NoDataKey):
        value_encrypt("too early", owner_id=person.pk)
    with pytest.raises(NoDataKey):
        Vault.objects.create(user=person, secret="too early")
    assert key_vault_collection().count_documents({"keyAltNames": name}) == 0
    assert raw_db[Vault._meta.db_table].count_documents({}) == 0

    data_key_ensure(person.pk)  # what connecting an account or the person's own write does
    for n in range(3):
        Vault.objects.create(user=person, secret=f"value {n}")
    encryption.data_key_forget(person.pk)  # a fresh process finds it by keyAltName
    data_key_ensure(person.pk)
    value_encrypt("again", owner_id=person.pk)
    assert key_vault_collection().count_documents({"keyAltNames": name}) == 1


def test_no_key_is_created_for_a_person_being_erased():
    person = UserFactory()
    ErasureRecord.objects.create(
        subject=erasure_subject(person.pk), erased_at=timezone.now(), completed=False
    )
    with pytest.raises(PersonErased):
        data_key_ensure(person.pk)
    with pytest.raises(NoDataKey):
        value_encrypt({"steps": 1}, owner_id=person.pk)
    assert (
        key_vault_collection().count_documents({"keyAltNames": data_key_alt_name(person.pk)}) == 0
    )


def test_a_system_owner_gets_its_key_on_first_use():
    owner = f"system:test-{UserFactory().pk}"
    value_encrypt({"payload": 1}, owner_id=owner)
    assert key_vault_collection().count_documents({"keyAltNames": owner}) == 1


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
