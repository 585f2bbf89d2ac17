from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("sources", "0006_provider_registry"),
    ]

    operations = []
