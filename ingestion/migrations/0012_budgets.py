"""Provider budgets: one token bucket per (provider, budget, account or application)."""

import django_mongodb_backend.fields
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("ingestion", "0011_erasure_fence")]

    operations = [
        migrations.CreateModel(
            name="BudgetBucket",
            fields=[
                (
                    "id",
                    django_mongodb_backend.fields.ObjectIdAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("key", models.CharField(max_length=200, unique=True)),
                ("provider", models.CharField(max_length=50)),
                ("budget", models.CharField(max_length=50)),
                ("per", models.CharField(max_length=10)),
                ("tokens", models.FloatField(default=0.0)),
                ("stamp", models.FloatField(default=0.0)),
                ("capacity", models.FloatField(default=0.0)),
                ("blocked_until", models.FloatField(default=0.0)),
                ("version", models.BigIntegerField(default=0)),
                ("units", models.BigIntegerField(default=0)),
                ("waits", models.BigIntegerField(default=0)),
                ("wait_s", models.FloatField(default=0.0)),
                ("deferrals", models.BigIntegerField(default=0)),
                ("rate_limited", models.BigIntegerField(default=0)),
                ("updated_at", models.DateTimeField(auto_now=True)),
            ],
            options={
                "indexes": [
                    models.Index(fields=["provider", "budget"], name="budget_provider_name")
                ],
            },
        ),
    ]
