from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("sources", "0002_userdatasource_external_lookup_userdatasource_notice")]

    operations = []
