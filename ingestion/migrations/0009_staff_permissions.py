from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("ingestion", "0008_unique_indexes_unfiltered")]

    operations = [
        migrations.AlterModelOptions(
            name="accessledgerentry",
            options={
                "permissions": [
                    (
                        "view_person_privacy",
                        "Can see a person's privacy page (connections, ledger)",
                    ),
                    ("export_person_data", "Can export a person's decrypted data"),
                    ("erase_person", "Can erase a person (staff accounts: superusers only)"),
                ],
                "verbose_name_plural": "access ledger entries",
            },
        ),
        migrations.AlterModelOptions(
            name="webhookevent",
            options={
                "permissions": [
                    ("view_webhook_payload", "Can see decrypted webhook payloads"),
                    ("replay_webhookevent", "Can replay webhook events"),
                ]
            },
        ),
    ]
