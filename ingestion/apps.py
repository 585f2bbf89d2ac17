from django.apps import AppConfig


class IngestionConfig(AppConfig):
    """How data flows in: scheduling, sync runs, storage, schemas and webhooks."""

    name = "ingestion"
    verbose_name = "Ingestion"
    default_auto_field = "django_mongodb_backend.fields.ObjectIdAutoField"

    def ready(self) -> None:
        from ingestion import signals  # noqa: F401
