"""The records API: scopes on people's API tokens, service tokens, and service reads batched in
the access ledger."""

from typing import Any

import django.db.models.deletion
import django_mongodb_backend.fields
from django.conf import settings
from django.db import migrations, models
from pymongo import ASCENDING

import ingestion.models
from sibling.migration_operations import unique_index_unfiltered

LEDGER_BATCH_INDEX = "ledger_service_read_batch"


def ledger_batch_index_create(apps: Any, schema_editor: Any) -> None:
    # One entry per token, person and hour: service reads upsert it atomically. Partial, so the
    # other entries (no service, no bucket) are not in it; the upsert's filter names the action,
    # which lets the embedded server's planner use a partial index (it cannot for a filter on
    # $type, which is why the constraint is not a model UniqueConstraint).
    model = apps.get_model("ingestion", "AccessLedgerEntry")
    schema_editor.get_collection(model._meta.db_table).create_index(
        [("subject_id", ASCENDING), ("service_id", ASCENDING), ("bucket", ASCENDING)],
        unique=True,
        name=LEDGER_BATCH_INDEX,
        partialFilterExpression={"action": "service_read"},
    )


def ledger_batch_index_drop(apps: Any, schema_editor: Any) -> None:
    model = apps.get_model("ingestion", "AccessLedgerEntry")
    schema_editor.get_collection(model._meta.db_table).drop_index(LEDGER_BATCH_INDEX)


class Migration(migrations.Migration):
    dependencies = [
        ("ingestion", "0012_budgets"),
        ("sibling", "0002_person"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        # Existing tokens keep what they could do: send events (the default fills them).
        migrations.AddField(
            model_name="apitoken",
            name="scopes",
            field=models.JSONField(blank=True, default=ingestion.models.api_token_scopes_default),
        ),
        migrations.CreateModel(
            name="ServiceToken",
            fields=[
                (
                    "id",
                    django_mongodb_backend.fields.ObjectIdAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "name",
                    models.CharField(
                        help_text="The module that uses it, as people see.", max_length=100
                    ),
                ),
                ("digest", models.CharField(editable=False, max_length=64)),
                ("prefix", models.CharField(editable=False, max_length=12)),
                ("scopes", models.JSONField(default=list)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("last_used_at", models.DateTimeField(blank=True, editable=False, null=True)),
                ("revoked_at", models.DateTimeField(blank=True, editable=False, null=True)),
                (
                    "created_by",
                    models.ForeignKey(
                        blank=True,
                        editable=False,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="service_tokens_made",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "person",
                    models.ForeignKey(
                        blank=True,
                        help_text="Only this person's records; empty: any person the request names.",
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="service_tokens",
                        to="sibling.person",
                    ),
                ),
            ],
            options={
                "permissions": [("revoke_servicetoken", "Can revoke service tokens")],
                "indexes": [models.Index(fields=["-created_at"], name="service_token_created")],
                "constraints": [
                    models.UniqueConstraint(fields=("digest",), name="service_token_digest")
                ],
            },
        ),
        # Looked up on every request that presents a service token.
        unique_index_unfiltered("ingestion", "ServiceToken", "service_token_digest"),
        migrations.AlterField(
            model_name="accessledgerentry",
            name="action",
            field=models.CharField(
                choices=[
                    ("view", "Viewed decrypted data"),
                    ("export", "Exported data"),
                    ("replay", "Replayed events"),
                    ("service_read", "Read by a Sibling service"),
                ],
                max_length=20,
            ),
        ),
        migrations.AddField(
            model_name="accessledgerentry",
            name="service",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="ledger_entries",
                to="ingestion.servicetoken",
            ),
        ),
        migrations.AddField(
            model_name="accessledgerentry",
            name="bucket",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="accessledgerentry",
            name="counts",
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.AddField(
            model_name="accessledgerentry",
            name="last_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(ledger_batch_index_create, ledger_batch_index_drop, elidable=False),
    ]
