"""One generic per-account state store replaces the models of single provider imitations.

Written by hand: each imitation now keeps its state as SandboxRecord rows (sources.sandbox.store),
so adding one needs no model and no migration. The dropped collections held sandbox state only.
"""

import django_mongodb_backend.fields
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("sandbox", "0002_webhooks"),
    ]

    operations = [
        migrations.DeleteModel(name="ActivityTick"),
        migrations.DeleteModel(name="GmailWatch"),
        migrations.DeleteModel(name="PlaidItem"),
        migrations.DeleteModel(name="PlaidLinkToken"),
        migrations.DeleteModel(name="PlaidPublicToken"),
        migrations.CreateModel(
            name="SandboxRecord",
            fields=[
                (
                    "id",
                    django_mongodb_backend.fields.ObjectIdAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("provider", models.CharField(max_length=40)),
                ("account", models.CharField(blank=True, default="", max_length=320)),
                ("kind", models.CharField(max_length=40)),
                ("key", models.CharField(max_length=400)),
                ("data", models.JSONField(blank=True, default=dict)),
                ("created_at", models.DateTimeField()),
                ("expires_at", models.DateTimeField(blank=True, default=None, null=True)),
            ],
            options={
                "indexes": [
                    models.Index(
                        fields=["provider", "account", "kind"], name="sandbox_record_account"
                    )
                ],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("provider", "kind", "key"), name="sandbox_record_unique"
                    )
                ],
            },
        ),
    ]
