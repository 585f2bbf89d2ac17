from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("ingestion", "0009_staff_permissions")]

    operations = []
