"""The sandbox's provider quotas: the units charged to each quota key, by time slot (QuotaSlot).

Written by hand. One document per quota key, charged with one atomic update; the TTL index
removes it once no window reads its newest slot.
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
                ("slots", models.JSONField(default=dict)),
                ("expires_at", models.DateTimeField()),
            ],
        ),
        migrations.RunPython(ttl_index_create, ttl_index_drop, elidable=False),
    ]
