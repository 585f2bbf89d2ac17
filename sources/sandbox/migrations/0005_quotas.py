"""The sandbox's provider quotas: units charged per quota key and time slot (QuotaSlot).

Written by hand. A slot's id is its quota key and slot number, so a window is one range of the
primary index; the TTL index removes a slot once it is older than any window that reads it.
"""

from typing import Any

from django.db import migrations, models

TTL_INDEX = "sandbox_quota_slot_ttl"


def ttl_index_create(apps: Any, schema_editor: Any) -> None:
    # TTL indexes cannot be declared as models.Index (as in 0004).
    model = apps.get_model("sandbox", "QuotaSlot")
    schema_editor.get_collection(model._meta.db_table).create_index(
        "expires_at", expireAfterSeconds=0, name=TTL_INDEX
    )


def ttl_index_drop(apps: Any, schema_editor: Any) -> None:
    model = apps.get_model("sandbox", "QuotaSlot")
    schema_editor.get_collection(model._meta.db_table).drop_index(TTL_INDEX)


class Migration(migrations.Migration):
    dependencies = [("sandbox", "0004_store_indexes")]

    operations = [
        migrations.CreateModel(
            name="QuotaSlot",
            fields=[
                (
                    "id",
                    models.CharField(
                        db_column="_id", max_length=200, primary_key=True, serialize=False
                    ),
                ),
                ("units", models.IntegerField(default=0)),
                ("expires_at", models.DateTimeField()),
            ],
        ),
        migrations.RunPython(ttl_index_create, ttl_index_drop, elidable=False),
    ]
