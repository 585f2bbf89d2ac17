from django.apps import AppConfig


class SourcesConfig(AppConfig):
    """What is connected: providers, people's connections and their credentials."""

    name = "sources"
    verbose_name = "Sources"
    default_auto_field = "django_mongodb_backend.fields.ObjectIdAutoField"

    def ready(self) -> None:
        from sources.providers.gmail import signals  # noqa: F401
