"""A person is found by public id (service readers, change notifications) or by account (every
request of theirs): both unique fields get plain unique indexes the embedded server can use.

django-mongodb-backend builds a field's ``unique=True`` as a partial index filtered on ``$type``,
which that server's planner never uses for a lookup (README, "Queries the embedded server cannot
index"; ``sibling.migration_operations``). Neither field is ever null, so a plain unique index
enforces the same rule. It keeps the backend's index name, so Django's own operations still
find it.
"""

from typing import Any

from django.db import migrations
from pymongo import ASCENDING

# column -> the BSON type the backend's partial filter names (for going back).
FIELDS = {"public_id": "string", "user_id": "objectId"}


def _unique_index_of(collection: Any, column: str) -> str:
    for name, spec in collection.index_information().items():
        if spec.get("unique") and spec["key"] == [(column, ASCENDING)]:
            return name
    raise LookupError(f"no unique index on {column}")


def unfiltered(apps: Any, schema_editor: Any) -> None:
    model = apps.get_model("sibling", "Person")
    collection = schema_editor.get_collection(model._meta.db_table)
    for column in FIELDS:
        name = _unique_index_of(collection, column)
        collection.drop_index(name)
        collection.create_index([(column, ASCENDING)], unique=True, name=name)


def filtered(apps: Any, schema_editor: Any) -> None:
    model = apps.get_model("sibling", "Person")
    collection = schema_editor.get_collection(model._meta.db_table)
    for column, bson_type in FIELDS.items():
        name = _unique_index_of(collection, column)
        collection.drop_index(name)
        collection.create_index(
            [(column, ASCENDING)],
            unique=True,
            name=name,
            partialFilterExpression={column: {"$type": bson_type}},
        )


class Migration(migrations.Migration):
    dependencies = [("sibling", "0002_person")]

    operations = [migrations.RunPython(unfiltered, filtered, elidable=False)]
