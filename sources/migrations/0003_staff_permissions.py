from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("sources", "0002_userdatasource_external_lookup_userdatasource_notice")]

    operations = [
        migrations.AlterModelOptions(
            name="userdatasource",
            options={
                "permissions": [
                    ("sync_userdatasource", "Can sync, pause, resume and resync connections"),
                    ("disconnect_userdatasource", "Can disconnect connections"),
                ],
                "verbose_name": "connection",
            },
        ),
    ]
