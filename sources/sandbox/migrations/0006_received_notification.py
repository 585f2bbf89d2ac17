"""The change-notification receiver's log (ReceivedNotification). Written by hand."""

import django_mongodb_backend.fields
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("sandbox", "0005_quotas")]

    operations = [
        migrations.CreateModel(
            name="ReceivedNotification",
            fields=[
                (
                    "id",
                    django_mongodb_backend.fields.ObjectIdAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("endpoint", models.CharField(max_length=100)),
                ("webhook_id", models.CharField(blank=True, default="", max_length=200)),
                ("event_type", models.CharField(blank=True, default="", max_length=60)),
                ("verified", models.BooleanField(default=False)),
                ("duplicate", models.BooleanField(default=False)),
                ("answered", models.PositiveIntegerField()),
                ("error", models.CharField(blank=True, default="", max_length=200)),
                ("body", models.JSONField(blank=True, default=None, null=True)),
                ("received_at", models.DateTimeField()),
            ],
            options={
                "indexes": [
                    models.Index(fields=["endpoint", "webhook_id"], name="sandbox_received_id")
                ],
            },
        ),
    ]
