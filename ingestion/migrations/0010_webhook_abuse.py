"""Webhook abuse contained: refused deliveries counted in a bounded, expiring log instead of one
event each; processed events expire; payloads under their person's key when known."""

from datetime import timedelta

import django_mongodb_backend.fields
from django.conf import settings
from django.db import migrations, models
from django.utils import timezone

import ingestion.models
from sibling.migration_operations import unique_index_unfiltered

TTL_INDEXES = (("WebhookEvent", "webhook_event_ttl"), ("WebhookRejection", "webhook_rejection_ttl"))


def ttl_indexes_create(apps, schema_editor):
    # TTL indexes cannot be declared as models.Index: created here, once, like raw_page_ttl.
    for model_name, name in TTL_INDEXES:
        model = apps.get_model("ingestion", model_name)
        schema_editor.get_collection(model._meta.db_table).create_index(
            "expires_at", expireAfterSeconds=0, name=name
        )
    # Refused deliveries stored as events before this migration expire like the rejection log.
    WebhookEvent = apps.get_model("ingestion", "WebhookEvent")
    until = timezone.now() + timedelta(days=settings.SIBLING_WEBHOOK_REJECTION_LOG_DAYS)
    WebhookEvent.objects.filter(status="rejected").update(expires_at=until)


def ttl_indexes_drop(apps, schema_editor):
    for model_name, name in TTL_INDEXES:
        model = apps.get_model("ingestion", model_name)
        schema_editor.get_collection(model._meta.db_table).drop_index(name)


class Migration(migrations.Migration):
    dependencies = [("ingestion", "0009_staff_permissions")]

    operations = [
        migrations.AlterField(
            model_name="webhookevent",
            name="payload",
            field=ingestion.models.WebhookPayloadField(null=True, owner="system:webhooks"),
        ),
        migrations.AddField(
            model_name="webhookevent",
            name="expires_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.CreateModel(
            name="WebhookRejection",
            fields=[
                (
                    "id",
                    django_mongodb_backend.fields.ObjectIdAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("provider", models.CharField(max_length=40)),
                ("reason", models.CharField(max_length=100)),
                (
                    "sender",
                    models.CharField(
                        help_text="The address (IPv6: its /64) it came from.", max_length=64
                    ),
                ),
                ("bucket", models.DateTimeField(help_text="The hour counted.")),
                ("count", models.PositiveIntegerField(default=0)),
                ("first_at", models.DateTimeField()),
                ("last_at", models.DateTimeField()),
                ("examples", models.JSONField(blank=True, default=list)),
                ("expires_at", models.DateTimeField()),
            ],
            options={
                "ordering": ["-bucket", "-last_at"],
                "indexes": [models.Index(fields=["-bucket"], name="webhook_rejection_time")],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("provider", "reason", "sender", "bucket"),
                        name="webhook_rejection_key",
                    )
                ],
            },
        ),
        # Every refusal upserts by this key: a plain unique index the planner can use.
        unique_index_unfiltered("ingestion", "WebhookRejection", "webhook_rejection_key"),
        migrations.RunPython(ttl_indexes_create, ttl_indexes_drop, elidable=False),
    ]
