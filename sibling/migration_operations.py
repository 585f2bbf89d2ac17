"""Migration operations for what django-mongodb-backend's defaults leave slow.

The backend builds every unique constraint as a *partial* index filtered on ``$type`` (so that,
as in SQL, several nulls may coexist). The embedded server's planner cannot prove that an
equality on a string implies ``$type: "string"``, so it never uses such an index for a lookup:
finding a webhook by its dedup key, or an API token by its digest, scanned the whole collection
(about 12 ms at 2,000 webhook events, growing with the collection). When every field of the
constraint is non-null, a plain unique index enforces exactly the same rule and any server can
use it for lookups.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations
from pymongo import ASCENDING


def _constraint(model: Any, name: str) -> Any:
    for constraint in model._meta.constraints:
        if constraint.name == name:
            return constraint
    raise LookupError(f"{model._meta.label} has no constraint {name}")


def unique_index_unfiltered(app_label: str, model_name: str, name: str) -> migrations.RunPython:
    """Rebuild the unique constraint ``name`` as a plain unique index of the same name (and
    back). Its fields must all be non-null, or the plain index would refuse a second null."""

    def forwards(apps: Any, schema_editor: Any) -> None:
        model = apps.get_model(app_label, model_name)
        constraint = _constraint(model, name)
        fields = [model._meta.get_field(field_name) for field_name in constraint.fields]
        nullable = [field.name for field in fields if field.null]
        if nullable or constraint.condition is not None:
            raise ValueError(f"{name} has nullable fields or a condition: {nullable}")
        collection = schema_editor.get_collection(model._meta.db_table)
        collection.drop_index(name)
        collection.create_index(
            [(field.column, ASCENDING) for field in fields], unique=True, name=name
        )

    def backwards(apps: Any, schema_editor: Any) -> None:
        model = apps.get_model(app_label, model_name)
        schema_editor.get_collection(model._meta.db_table).drop_index(name)
        schema_editor.add_constraint(model, _constraint(model, name))

    return migrations.RunPython(forwards, backwards, elidable=False)
