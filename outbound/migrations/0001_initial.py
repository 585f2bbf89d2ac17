"""Subscribers and their deliveries (generated, then: the unique key as a plain index, and the
TTL index that deletes delivered rows once they expire)."""

import django.db.models.deletion
import django_mongodb_backend.fields
import sibling.fields
import sibling.migration_operations
from django.conf import settings
from django.db import migrations, models

TTL_INDEX = "outbound_delivery_ttl"


def ttl_index_create(apps, schema_editor):
    # TTL indexes cannot be declared as models.Index. Rows without a date (not delivered) stay.
    model = apps.get_model("outbound", "Delivery")
    schema_editor.get_collection(model._meta.db_table).create_index(
        "expires_at", expireAfterSeconds=0, name=TTL_INDEX
    )


def ttl_index_drop(apps, schema_editor):
    model = apps.get_model("outbound", "Delivery")
    schema_editor.get_collection(model._meta.db_table).drop_index(TTL_INDEX)


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="Subscriber",
            fields=[
                (
                    "id",
                    django_mongodb_backend.fields.ObjectIdAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("name", models.CharField(max_length=100, unique=True)),
                (
                    "url",
                    models.URLField(help_text="Where events are POSTed (https).", max_length=2000),
                ),
                ("secret", sibling.fields.EncryptedField(null=True, owner="system:outbound")),
                ("event_types", models.JSONField(blank=True, default=list)),
                ("categories", models.JSONField(blank=True, default=list)),
                ("active", models.BooleanField(default=True)),
                ("paused_reason", models.CharField(blank=True, default="", max_length=300)),
                ("paused_at", models.DateTimeField(blank=True, null=True)),
                ("failing_since", models.DateTimeField(blank=True, null=True)),
                ("last_success_at", models.DateTimeField(blank=True, null=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "created_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "permissions": [("pause_subscriber", "Can pause and resume subscribers")],
            },
        ),
        migrations.CreateModel(
            name="Delivery",
            fields=[
                (
                    "id",
                    django_mongodb_backend.fields.ObjectIdAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("event_id", models.CharField(max_length=40)),
                ("event_type", models.CharField(max_length=40)),
                ("person", models.CharField(blank=True, default="", max_length=36)),
                ("data", models.JSONField(default=dict)),
                ("created_at", models.DateTimeField()),
                ("target", models.CharField(max_length=200)),
                ("handler", models.CharField(blank=True, default="", max_length=200)),
                (
                    "state",
                    models.CharField(
                        choices=[
                            ("pending", "Pending"),
                            ("sending", "Sending"),
                            ("delivered", "Delivered"),
                            ("failed", "Failed (will retry)"),
                            ("exhausted", "Exhausted (no more retries)"),
                        ],
                        default="pending",
                        max_length=12,
                    ),
                ),
                ("attempts", models.PositiveIntegerField(default=0)),
                ("next_attempt_at", models.DateTimeField()),
                ("retry_until", models.DateTimeField()),
                ("claimed_until", models.DateTimeField(blank=True, null=True)),
                ("last_attempt_at", models.DateTimeField(blank=True, null=True)),
                ("last_status", models.PositiveIntegerField(blank=True, null=True)),
                ("last_error", models.CharField(blank=True, default="", max_length=200)),
                ("delivered_at", models.DateTimeField(blank=True, null=True)),
                ("replayed_at", models.DateTimeField(blank=True, null=True)),
                ("replays", models.PositiveIntegerField(default=0)),
                ("expires_at", models.DateTimeField(blank=True, null=True)),
                (
                    "subscriber",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="deliveries",
                        to="outbound.subscriber",
                    ),
                ),
            ],
            options={
                "verbose_name_plural": "deliveries",
                "permissions": [("replay_delivery", "Can replay change notifications")],
                "indexes": [
                    models.Index(fields=["state", "next_attempt_at"], name="outbound_delivery_due"),
                    models.Index(
                        fields=["target", "person", "state", "created_at"],
                        name="outbound_delivery_order",
                    ),
                    models.Index(fields=["created_at"], name="outbound_delivery_created"),
                ],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("target", "event_id"), name="outbound_delivery_once"
                    )
                ],
            },
        ),
        # One delivery per event and target, as a plain unique index (both fields non-null).
        sibling.migration_operations.unique_index_unfiltered(
            "outbound", "delivery", "outbound_delivery_once"
        ),
        migrations.RunPython(ttl_index_create, ttl_index_drop, elidable=False),
    ]
