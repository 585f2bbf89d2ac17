from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("sandbox", "0004_store_indexes")]

    operations: list = []
