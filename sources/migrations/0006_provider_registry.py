# The provider fields lose their choices: a provider is validated against the registry
# (sources.models.provider_validate), so adding one needs no migration.

from django.db import migrations

import sources.models


class Migration(migrations.Migration):
    dependencies = [
        ("sources", "0005_sync_lease"),
    ]

    operations = [
        migrations.AlterField(
            model_name="userdatasource",
            name="provider",
            field=sources.models.ProviderField(max_length=40),
        ),
        migrations.AlterField(
            model_name="pendingrevocation",
            name="provider",
            field=sources.models.ProviderField(max_length=40),
        ),
    ]
