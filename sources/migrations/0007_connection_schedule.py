# A connection's history window: how far back its first sync reaches, as the person chose it
# (empty for connections made before: the default window, SIBLING_BACKFILL_DAYS).

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("sources", "0006_provider_registry"),
    ]

    operations = [
        migrations.AddField(
            model_name="userdatasource",
            name="backfill_days",
            field=models.PositiveIntegerField(
                blank=True, help_text="Days of history the first sync fetches.", null=True
            ),
        ),
    ]
