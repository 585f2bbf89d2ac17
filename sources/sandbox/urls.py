"""The sandbox's URL contract, relative to settings.SIBLING_SANDBOX_BASE_URL (…/sandbox).

The shared routes (Google's OAuth server, the control APIs), then every registered provider's
imitation (`urlpatterns` of its sandbox module, see sources.sandbox.registry). Mounted only when
the sandbox is allowed (DEBUG), by sibling/urls.py.
"""

from django.urls import path

from . import faults, google, registry, webhooks

app_name = "sandbox"

urlpatterns = [
    # Google OAuth 2.0 (one sandbox for every Google provider's client)
    path("google/o/oauth2/v2/auth", google.authorize, name="google-authorize"),
    path("google/token", google.token, name="google-token"),
    path("google/revoke", google.revoke, name="google-revoke"),
    path("google/oauth2/v3/userinfo", google.userinfo, name="google-userinfo"),
    path("google/oauth2/v3/certs", google.certs, name="google-certs"),
    path("google/avatar/<str:sub>.svg", google.avatar, name="google-avatar"),
    # Test and development control
    path("_faults", faults.faults_api, name="faults"),
    path("_webhooks", webhooks.webhooks_api, name="webhooks"),
]

for _module in registry.sandbox_modules().values():
    urlpatterns += _module.urlpatterns
