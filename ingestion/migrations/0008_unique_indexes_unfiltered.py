from django.db import migrations

from sibling.migration_operations import unique_index_unfiltered


class Migration(migrations.Migration):
    dependencies = [("ingestion", "0007_accessledgerentry")]

    operations = [
        # Looked up on every redelivery and on every events API request.
        unique_index_unfiltered("ingestion", "WebhookEvent", "webhook_dedup"),
        unique_index_unfiltered("ingestion", "ApiToken", "api_token_digest"),
    ]
