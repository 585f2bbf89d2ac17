from django.apps import AppConfig


class OutboundConfig(AppConfig):
    """Change notifications: events about people's data, stored, then delivered by workers to
    subscribers (HTTPS endpoints signed per Standard Webhooks, and in-process handlers)."""

    name = "outbound"
    verbose_name = "Change notifications"
    default_auto_field = "django_mongodb_backend.fields.ObjectIdAutoField"

    def ready(self) -> None:
        from outbound import checks, receivers, signals  # noqa: F401
