from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("sources", "0004_pending_revocation")]

    operations = [
        migrations.AddField(
            model_name="userdatasource",
            name="pending_windows",
            field=models.JSONField(blank=True, default=dict),
        ),
    ]
