from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from ingestion import admin as ingestion_admin
from ingestion import metrics as ingestion_metrics
from sibling.views import healthz
from sources import views as source_views

urlpatterns = [
    path("", source_views.home, name="home"),
    path("signup/", source_views.signup, name="signup"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include("sources.urls")),
    path("connect/", include("social_django.urls", namespace="social")),
    path("admin/sync-health/", ingestion_admin.dashboard, name="sync_dashboard"),
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("metrics", ingestion_metrics.metrics, name="metrics"),
]

if settings.SIBLING_SANDBOX_ALLOWED:
    urlpatterns.append(path("sandbox/", include("sources.sandbox.urls")))
