from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from ingestion import admin as ingestion_admin
from ingestion import metrics as ingestion_metrics
from ingestion import webhooks as ingestion_webhooks
from sibling import throttles
from sibling.views import healthz
from sources import views as source_views
from sources.providers.fitbit.webhooks import FitbitWebhookReceiver
from sources.providers.gmail.webhooks import GmailWebhookReceiver
from sources.providers.plaid.webhooks import PlaidWebhookReceiver

urlpatterns = [
    path("", source_views.home, name="home"),
    path("signup/", source_views.signup, name="signup"),
    path("login/", throttles.login_limited(auth_views.LoginView.as_view()), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include("sources.urls")),
    path("connect/", include("sources.social_urls", namespace="social")),
    path("", include("ingestion.urls")),
    path("admin/sync-health/", ingestion_admin.dashboard, name="sync_dashboard"),
    path("admin/privacy/", ingestion_admin.privacy_search, name="privacy_search"),
    path("admin/privacy/<str:user_id>/", ingestion_admin.person_privacy, name="person_privacy"),
    # Staff sign in here: counted with people's logins (sibling.throttles).
    path("admin/login/", throttles.login_limited(admin.site.login)),
    path("admin/", admin.site.urls),
    path("webhooks/plaid/", PlaidWebhookReceiver.as_view(), name="webhook_plaid"),
    path("webhooks/gmail/", GmailWebhookReceiver.as_view(), name="webhook_gmail"),
    path("webhooks/fitbit/", FitbitWebhookReceiver.as_view(), name="webhook_fitbit"),
    path("healthz", healthz, name="healthz"),
    path("metrics", ingestion_metrics.metrics, name="metrics"),
]

if settings.SIBLING_SANDBOX_ALLOWED:
    urlpatterns += [
        path("sandbox/", include("sources.sandbox.urls")),
        path("webhooks/noop/", ingestion_webhooks.noop, name="webhook_noop"),
    ]
