from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("sources", "0003_staff_permissions")]

    operations = []
