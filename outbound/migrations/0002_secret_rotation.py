"""A subscriber's previous secret, signed with beside the new one for a while after a rotation."""

from django.db import migrations, models

import sibling.fields


class Migration(migrations.Migration):
    dependencies = [("outbound", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="subscriber",
            name="previous_secret",
            field=sibling.fields.EncryptedField(null=True, owner="system:outbound"),
        ),
        migrations.AddField(
            model_name="subscriber",
            name="previous_secret_until",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
