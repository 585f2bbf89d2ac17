"""Model fields whose values are encrypted with their owner's data key.

The owner is named by ``owner`` (a field of the model, by default ``user``; ``"pk"`` for the
person's own row; ``"system:<name>"`` for data not yet tied to a person). Values are encrypted
in ``pre_save``, so only ``Model.save()``, ``bulk_create()`` and ``sibling.writes.model_insert()``
write them; a write that would bypass encryption (``QuerySet.update()`` with a plaintext value)
raises instead of storing plaintext. Reads hand plaintext to the application.
"""

from __future__ import annotations

from typing import Any

from django.db import models

from sibling.encryption import SYSTEM_PREFIX, is_ciphertext, value_decrypt, value_encrypt


class PlaintextWriteError(TypeError):
    """An encrypted field was about to be written or queried with a plaintext value."""


class EncryptedField(models.Field):
    """Any BSON value (string, number, dict, list), encrypted with the random algorithm.

    Not queryable. Not editable in forms by default: what is encrypted is usually a secret.
    """

    description = "A value encrypted with its owner's data key"
    deterministic = False

    def __init__(self, *args: Any, owner: str = "user", **kwargs: Any) -> None:
        self.owner = owner
        kwargs.setdefault("editable", False)
        super().__init__(*args, **kwargs)

    def deconstruct(self) -> tuple[str, str, list[Any], dict[str, Any]]:
        name, path, args, kwargs = super().deconstruct()
        if self.owner != "user":
            kwargs["owner"] = self.owner
        if kwargs.get("editable") is False:
            del kwargs["editable"]
        else:
            kwargs["editable"] = True
        return name, path, args, kwargs

    def db_type(self, connection: Any) -> str:
        return "binData"

    def owner_id(self, instance: models.Model) -> Any:
        if self.owner == "pk":
            return instance.pk
        if self.owner.startswith(SYSTEM_PREFIX):
            return self.owner
        return getattr(instance, instance._meta.get_field(self.owner).attname)

    def pre_save(self, model_instance: models.Model, add: bool) -> Any:
        value = getattr(model_instance, self.attname)
        if value is None or is_ciphertext(value):
            return value
        owner_id = self.owner_id(model_instance)
        if owner_id is None:
            raise PlaintextWriteError(
                f"{model_instance._meta.label}.{self.name} needs its owner ({self.owner}) "
                "before it can be encrypted"
            )
        return value_encrypt(value, owner_id=owner_id, deterministic=self.deterministic)

    def get_db_prep_value(self, value: Any, connection: Any, prepared: bool = False) -> Any:
        if value is None or is_ciphertext(value):
            return value
        raise PlaintextWriteError(
            f"{self.model._meta.label}.{self.name} only takes encrypted values here: save it "
            "through Model.save(), or query it with sibling.fields.encrypted_lookup()"
        )

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        # Django's connection decrypts automatically; this covers a client that does not.
        if is_ciphertext(value):
            return value_decrypt(value)
        return value

    def to_python(self, value: Any) -> Any:
        return value


class DeterministicEncryptedField(EncryptedField):
    """A string encrypted deterministically, so it can be found by equality for one owner.

    Reveals which rows of one owner hold equal values; use for identifiers, not for free text.
    """

    description = "A string encrypted deterministically with its owner's data key"
    deterministic = True

    def pre_save(self, model_instance: models.Model, add: bool) -> Any:
        value = getattr(model_instance, self.attname)
        if value is not None and not is_ciphertext(value) and not isinstance(value, str):
            raise PlaintextWriteError(f"{self.name} takes strings only")
        return super().pre_save(model_instance, add)


def encrypted_lookup(value: str, *, owner_id: Any) -> Any:
    """The stored form of value in a DeterministicEncryptedField of owner_id, for filter()."""
    return value_encrypt(value, owner_id=owner_id, deterministic=True)
