from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("ingestion", "0010_webhook_abuse")]

    # Erasures recorded before the fence existed had all finished: they default to completed.
    operations = [
        migrations.AddField(
            model_name="erasurerecord",
            name="completed",
            field=models.BooleanField(
                default=True,
                help_text="False from the moment the erasure begins until it has finished.",
            ),
        ),
    ]
