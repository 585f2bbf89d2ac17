import django.db.models.deletion
import django_mongodb_backend.fields
from django.conf import settings
from django.db import migrations, models

import sources.models
from sibling.migration_operations import unique_index_unfiltered


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("sources", "0007_connection_schedule"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="Incident",
            fields=[
                (
                    "id",
                    django_mongodb_backend.fields.ObjectIdAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("provider", sources.models.ProviderField(max_length=40)),
                (
                    "kind",
                    models.CharField(
                        choices=[
                            ("reauth_required", "Sign-in needed"),
                            ("stopped", "Syncing stopped"),
                            ("expiring", "Sharing ends soon"),
                        ],
                        max_length=20,
                    ),
                ),
                ("key", models.CharField(max_length=120)),
                ("opened_at", models.DateTimeField()),
                ("closed_at", models.DateTimeField(blank=True, null=True)),
                (
                    "closed_by",
                    models.CharField(
                        blank=True,
                        choices=[
                            ("reconnected", "Reconnected"),
                            ("synced", "Synced again"),
                            ("disconnected", "Disconnected"),
                        ],
                        max_length=20,
                    ),
                ),
                (
                    "email_state",
                    models.CharField(
                        choices=[
                            ("pending", "Waiting to be sent"),
                            ("sending", "Being sent"),
                            ("sent", "Sent"),
                            ("skipped", "Not sent"),
                            ("failed", "Failed"),
                        ],
                        default="pending",
                        max_length=10,
                    ),
                ),
                ("email_note", models.CharField(blank=True, max_length=100)),
                ("email_attempts", models.PositiveIntegerField(default=0)),
                ("email_claimed_until", models.DateTimeField(blank=True, null=True)),
                ("email_next_attempt_at", models.DateTimeField(blank=True, null=True)),
                ("emailed_at", models.DateTimeField(blank=True, null=True)),
                (
                    "connection",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="alert_incidents",
                        to="sources.userdatasource",
                    ),
                ),
                (
                    "user",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="alert_incidents",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "verbose_name": "connection alert",
                "ordering": ["-opened_at"],
                "indexes": [
                    models.Index(
                        fields=["email_state", "email_next_attempt_at"], name="alert_email_due"
                    )
                ],
                "constraints": [
                    models.UniqueConstraint(fields=("key",), name="alert_incident_key")
                ],
            },
        ),
        # Looked up by key whenever a connection changes: a plain unique index any server uses.
        unique_index_unfiltered("alerts", "Incident", "alert_incident_key"),
    ]
