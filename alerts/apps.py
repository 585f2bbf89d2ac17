from django.apps import AppConfig


class AlertsConfig(AppConfig):
    """Emails that tell a person a connection needs them: one per incident."""

    name = "alerts"
    verbose_name = "Alerts"
    default_auto_field = "django_mongodb_backend.fields.ObjectIdAutoField"

    def ready(self) -> None:
        from alerts import checks, signals  # noqa: F401  (receivers and deploy checks)
