"""Client-side field-level encryption with one data key per person.

Values are encrypted explicitly with pymongo's ``ClientEncryption`` before they leave the process,
so MongoDB only ever holds BSON Binary subtype 6 for them. Django's connection decrypts
automatically on read (``auto_encryption_opts`` in settings, ``bypass_auto_encryption``), and
:func:`value_decrypt` does the same for code that reads through pymongo directly.

Each person has one data key, found by its ``keyAltName`` (``user:<id>``). A person's key is
created only on purpose (:func:`data_key_create`, called through ``ingestion.fence.data_key_ensure``
by the flows that may create one: connecting an account, the person's own writes), never as a
side effect of encrypting: a write that races a person's erasure must fail, not bring their key
back. System owners (``system:<name>``) get theirs on first use. The data keys live in the key
vault collection, wrapped by the master key (local or a cloud KMS). Deleting a person's data key
makes everything encrypted under it unreadable, backups included.
"""

from __future__ import annotations

import threading
from typing import Any
from uuid import UUID

from bson import Binary
from bson.binary import UUID_SUBTYPE, UuidRepresentation
from bson.codec_options import CodecOptions
from django.conf import settings
from pymongo.collection import Collection
from pymongo.encryption import Algorithm, ClientEncryption
from pymongo.errors import DuplicateKeyError, EncryptionError

from sibling import mongo

ENCRYPTED_SUBTYPE = 6
# The first byte of a subtype-6 payload tells the algorithm, the next 16 the data key's UUID.
_BLOB_DETERMINISTIC = 1
_BLOB_RANDOM = 2
RANDOM = Algorithm.AEAD_AES_256_CBC_HMAC_SHA_512_Random
DETERMINISTIC = Algorithm.AEAD_AES_256_CBC_HMAC_SHA_512_Deterministic

CODEC_OPTIONS = CodecOptions(tz_aware=True, uuid_representation=UuidRepresentation.STANDARD)
_key_ids: dict[str, Binary] = {}
_key_ids_lock = threading.Lock()


class EncryptionFailure(Exception):
    """Encryption or decryption failed. The message never contains the value."""


class WrongOwnerError(EncryptionFailure):
    """A value is encrypted under another person's data key."""


class NoDataKey(EncryptionFailure):
    """The person has no data key (never created, or destroyed by an erasure)."""


def key_vault_collection() -> Collection:
    db_name, coll_name = settings.SIBLING_KEY_VAULT_NAMESPACE.split(".", 1)
    return mongo.plain_client()[db_name][coll_name]


def key_vault_ensure_index() -> None:
    """The unique partial index on keyAltNames that makes one key per name hold under races."""
    key_vault_collection().create_index(
        "keyAltNames",
        unique=True,
        partialFilterExpression={"keyAltNames": {"$exists": True}},
        name="keyAltNames_unique",
    )


def _client_encryption_new() -> ClientEncryption:
    key_vault_ensure_index()
    return ClientEncryption(
        settings.SIBLING_KMS_PROVIDERS,
        settings.SIBLING_KEY_VAULT_NAMESPACE,
        mongo.plain_client(),
        CODEC_OPTIONS,
    )


def client_encryption() -> ClientEncryption:
    """This process's ClientEncryption (never shared across a fork)."""
    return mongo.register_process_local("client_encryption", _client_encryption_new)


SYSTEM_PREFIX = "system:"


def is_system_owner(owner_id: Any) -> bool:
    return isinstance(owner_id, str) and owner_id.startswith(SYSTEM_PREFIX)


def data_key_alt_name(owner_id: Any) -> str:
    """``user:<id>`` for a person; a ``system:<name>`` owner (data not yet tied to a person,
    such as an incoming webhook) names its own key."""
    if is_system_owner(owner_id):
        return owner_id
    return f"user:{owner_id}"


def data_key_create(owner_id: Any) -> Binary:
    """The owner's data key id, the key created when it does not exist yet.

    For a person, call ``ingestion.fence.data_key_ensure`` instead: it refuses a person being
    erased.
    """
    key_id = data_key_id(owner_id, create=True)
    if key_id is None:  # data_key_id raises first; this keeps the type honest
        raise EncryptionFailure(f"the data key {data_key_alt_name(owner_id)} was not created")
    return key_id


def data_key_id(owner_id: Any, *, create: bool = False) -> Binary | None:
    """The id of the owner's data key, or None when there is none (created when ``create``)."""
    name = data_key_alt_name(owner_id)
    key_id = _key_ids.get(name)
    if key_id is not None:
        return key_id
    ce = client_encryption()
    doc = ce.get_key_by_alt_name(name)
    if doc is None:
        if not create:
            return None
        try:
            ce.create_data_key(
                settings.SIBLING_KMS_PROVIDER,
                master_key=settings.SIBLING_KMS_MASTER_KEY,
                key_alt_names=[name],
            )
        except (DuplicateKeyError, EncryptionError) as err:
            # Another process created it first; the unique index kept it single.
            if not isinstance(getattr(err, "cause", err), DuplicateKeyError):
                raise
        doc = ce.get_key_by_alt_name(name)
        if doc is None:
            raise EncryptionFailure(f"the data key {name} could not be created")
    key_id = doc["_id"]
    if not isinstance(key_id, Binary):
        key_id = Binary.from_uuid(key_id) if isinstance(key_id, UUID) else Binary(key_id, 4)
    with _key_ids_lock:
        _key_ids[name] = key_id
    return key_id


def data_key_forget(owner_id: Any) -> None:
    """Drop this process's cached key id for the person (after the key was deleted)."""
    with _key_ids_lock:
        _key_ids.pop(data_key_alt_name(owner_id), None)


def is_ciphertext(value: Any) -> bool:
    return isinstance(value, Binary) and value.subtype == ENCRYPTED_SUBTYPE


def ciphertext_key_id(value: Binary) -> Binary:
    """The id of the data key a ciphertext was made with."""
    if not is_ciphertext(value) or len(value) < 17 or value[0] not in (1, 2):
        raise EncryptionFailure("not a client-side encrypted value")
    return Binary(bytes(value[1:17]), UUID_SUBTYPE)


def value_encrypt(value: Any, *, owner_id: Any, deterministic: bool = False) -> Binary:
    """Encrypt value with the owner's data key.

    Random encryption takes any BSON value (strings, numbers, dicts, lists). Deterministic
    encryption gives the same ciphertext for the same value and owner, so it can be found by
    equality; it takes strings only and reveals which values are equal.
    """
    if value is None:
        raise EncryptionFailure("None is stored as null, not encrypted")
    if deterministic and not isinstance(value, str):
        raise EncryptionFailure("deterministic encryption takes strings only")
    # Only a system owner's key comes into being here; a person's must exist already.
    key_id = data_key_id(owner_id, create=is_system_owner(owner_id))
    if key_id is None:
        raise NoDataKey(
            f"{data_key_alt_name(owner_id)} has no data key: keys are created when an account "
            "is connected or the person writes data of their own"
        )
    try:
        return client_encryption().encrypt(
            value, DETERMINISTIC if deterministic else RANDOM, key_id=key_id
        )
    except EncryptionError as err:
        raise EncryptionFailure(
            f"could not encrypt a {type(value).__name__} for {data_key_alt_name(owner_id)}"
        ) from err


def value_decrypt(value: Binary, *, owner_id: Any | None = None) -> Any:
    """Decrypt a ciphertext; with owner_id, refuse one made under anyone else's key."""
    if owner_id is not None:
        expected = data_key_id(owner_id, create=False)
        if expected is None or ciphertext_key_id(value) != expected:
            raise WrongOwnerError(f"the value is not encrypted for {data_key_alt_name(owner_id)}")
    try:
        return client_encryption().decrypt(value)
    except EncryptionError as err:
        raise EncryptionFailure("could not decrypt the value (its data key may be gone)") from err
