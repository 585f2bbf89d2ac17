from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("ingestion", "0008_unique_indexes_unfiltered")]

    operations = []
