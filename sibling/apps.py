"""AppConfigs: the project's own, and contrib/third-party apps moved to ObjectIdAutoField.

Apps whose AppConfig names a default_auto_field ignore DEFAULT_AUTO_FIELD; on MongoDB each needs an
override here plus generated migrations (MIGRATION_MODULES in settings).
"""

from django.apps import AppConfig
from django.contrib.admin.apps import AdminConfig
from django.contrib.auth.apps import AuthConfig
from django.contrib.contenttypes.apps import ContentTypesConfig
from django_q.apps import DjangoQConfig
from social_django.apps import PythonSocialAuthConfig

OBJECT_ID_AUTO_FIELD = "django_mongodb_backend.fields.ObjectIdAutoField"


class MongoAdminConfig(AdminConfig):
    default_auto_field = OBJECT_ID_AUTO_FIELD


class MongoAuthConfig(AuthConfig):
    default_auto_field = OBJECT_ID_AUTO_FIELD


class MongoContentTypesConfig(ContentTypesConfig):
    default_auto_field = OBJECT_ID_AUTO_FIELD


class MongoSocialAuthConfig(PythonSocialAuthConfig):
    default_auto_field = OBJECT_ID_AUTO_FIELD


class MongoDjangoQConfig(DjangoQConfig):
    default_auto_field = OBJECT_ID_AUTO_FIELD


class SiblingConfig(AppConfig):
    name = "sibling"
    verbose_name = "Operations"
    default_auto_field = OBJECT_ID_AUTO_FIELD

    def ready(self) -> None:
        from sibling import (  # noqa: F401  (deploy checks, fork hooks, post_migrate setup)
            checks,
            mongo,
            signals,
            tracing,
        )

        # Here, in every process that sets Django up (web, workers, commands), before the
        # middleware is loaded and before the first MongoClient is made; a no-op without
        # OTEL_EXPORTER_OTLP_ENDPOINT.
        tracing.tracing_setup()
