from django.apps import AppConfig


class SandboxConfig(AppConfig):
    """A faithful imitation of each provider over real HTTP, for development and tests."""

    name = "sources.sandbox"
    label = "sandbox"
    verbose_name = "Provider sandbox"
    default_auto_field = "django_mongodb_backend.fields.ObjectIdAutoField"
