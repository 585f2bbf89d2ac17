from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("ingestion", "0012_budgets"),
        ("sibling", "0002_person"),
    ]

    operations = []
