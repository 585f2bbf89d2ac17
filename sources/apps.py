from django.apps import AppConfig


class SourcesConfig(AppConfig):
    """What is connected: providers, people's connections and their credentials."""

    name = "sources"
    verbose_name = "Sources"
    default_auto_field = "django_mongodb_backend.fields.ObjectIdAutoField"

    def ready(self) -> None:
        import importlib
        import importlib.util

        from sources import checks  # noqa: F401  (registers the declaration checks)
        from sources.providers import PROVIDERS

        # A provider's receivers live in its package's signals module, when it has one.
        for provider in PROVIDERS.values():
            module = f"{provider.__module__.rsplit('.', 1)[0]}.signals"
            if importlib.util.find_spec(module) is not None:
                importlib.import_module(module)
