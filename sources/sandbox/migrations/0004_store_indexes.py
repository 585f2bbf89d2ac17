"""The state store's key lookups use an index, and expired sandbox state goes away.

Every imitation call that reads a token or a code looks its record up by (provider, kind, key):
the backend's partial unique index is never chosen for that (sibling.migration_operations), so
it becomes a plain unique index (all three fields are non-null).

A development server left running keeps issuing authorization codes, access tokens and one-time
values. A TTL index removes each a day after it expired (meanwhile an imitation still answers
"expired" rather than "unknown", as the real providers do); state without an expiry (null) is
never removed.
"""

from typing import Any

from django.db import migrations

from sibling.migration_operations import unique_index_unfiltered

EXPIRED_KEPT_S = 86400
TTL_INDEXES = (
    ("SandboxRecord", "sandbox_record_ttl"),
    ("GoogleAuthCode", "sandbox_google_code_ttl"),
    ("GoogleAccessToken", "sandbox_google_token_ttl"),
)


def ttl_indexes_create(apps: Any, schema_editor: Any) -> None:
    # TTL indexes cannot be declared as models.Index: created here, once (as ingestion's).
    for model_name, name in TTL_INDEXES:
        model = apps.get_model("sandbox", model_name)
        schema_editor.get_collection(model._meta.db_table).create_index(
            "expires_at", expireAfterSeconds=EXPIRED_KEPT_S, name=name
        )


def ttl_indexes_drop(apps: Any, schema_editor: Any) -> None:
    for model_name, name in TTL_INDEXES:
        model = apps.get_model("sandbox", model_name)
        schema_editor.get_collection(model._meta.db_table).drop_index(name)


class Migration(migrations.Migration):
    dependencies = [("sandbox", "0003_state_store")]

    operations = [
        unique_index_unfiltered("sandbox", "SandboxRecord", "sandbox_record_unique"),
        migrations.RunPython(ttl_indexes_create, ttl_indexes_drop, elidable=False),
    ]
