from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import URLPattern, include, path
from django.utils.module_loading import import_string

from ingestion import admin as ingestion_admin
from ingestion import metrics as ingestion_metrics
from ingestion import webhooks as ingestion_webhooks
from sibling import throttles
from sibling.views import healthz
from sibling.views_settings import person_settings
from sources import views as source_views
from sources.providers import PROVIDERS


def webhook_routes() -> list[URLPattern]:
    """/webhooks/<id>/ (name webhook_<id>) for every provider that declares a receiver."""
    return [
        path(
            f"webhooks/{provider.id}/",
            import_string(provider.webhook_receiver_path).as_view(),
            name=f"webhook_{provider.id}",
        )
        for provider in PROVIDERS.values()
        if provider.webhook_receiver_path
    ]


urlpatterns = [
    path("", source_views.home, name="home"),
    path("signup/", source_views.signup, name="signup"),
    path("settings/", person_settings, name="person_settings"),
    path("login/", throttles.login_limited(auth_views.LoginView.as_view()), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include("sources.urls")),
    path("connect/", include("sources.social_urls", namespace="social")),
    path("", include("ingestion.urls")),
    path("", include("alerts.urls")),
    path("admin/sync-health/", ingestion_admin.dashboard, name="sync_dashboard"),
    path("admin/privacy/", ingestion_admin.privacy_search, name="privacy_search"),
    path("admin/privacy/<str:user_id>/", ingestion_admin.person_privacy, name="person_privacy"),
    # Staff sign in here: counted with people's logins (sibling.throttles).
    path("admin/login/", throttles.login_limited(admin.site.login)),
    path("admin/", admin.site.urls),
    *webhook_routes(),
    path("healthz", healthz, name="healthz"),
    path("metrics", ingestion_metrics.metrics, name="metrics"),
]

if settings.SIBLING_SANDBOX_ALLOWED:
    urlpatterns += [
        path("sandbox/", include("sources.sandbox.urls")),
        path("webhooks/noop/", ingestion_webhooks.noop, name="webhook_noop"),
    ]
