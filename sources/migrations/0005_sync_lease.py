from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("sources", "0004_pending_revocation")]

    operations = []
