from django.urls import path

from sources import views

app_name = "sources"
urlpatterns = [
    path("connections/", views.connections, name="connections"),
    # Connecting a source, per auth mode (sources.views.connect): api_key the key form,
    # hosted_link the page that opens the provider's dialog, oauth2 social-auth's begin step.
    path("connections/new/<str:provider_id>/", views.connect, name="connect"),
    path("connections/new/<str:provider_id>/link-token/", views.link_token, name="link_token"),
    path("connections/new/<str:provider_id>/exchange/", views.link_exchange, name="link_exchange"),
    path(
        "connections/<str:connection_id>/disconnect/",
        views.connection_disconnect,
        name="disconnect",
    ),
    # A connection's card: how often it syncs, and how far back its first sync reaches.
    path(
        "connections/<str:connection_id>/schedule/",
        views.connection_schedule,
        name="schedule",
    ),
    path(
        "connections/<str:connection_id>/history/",
        views.connection_history,
        name="history",
    ),
    path(
        "connections/<str:connection_id>/<str:action>/",
        views.connection_action,
        name="action",
    ),
]
