from django.urls import path

from sources import views

app_name = "sources"
urlpatterns = [
    path("connections/", views.connections, name="connections"),
    path("connections/rescuetime/", views.rescuetime_connect, name="rescuetime_connect"),
    path("connections/plaid/", views.plaid_connect, name="plaid_connect"),
    path("connections/plaid/link-token/", views.plaid_link_token, name="plaid_link_token"),
    path("connections/plaid/exchange/", views.plaid_exchange, name="plaid_exchange"),
    path(
        "connections/<str:connection_id>/disconnect/",
        views.connection_disconnect,
        name="disconnect",
    ),
    path(
        "connections/<str:connection_id>/<str:action>/",
        views.connection_action,
        name="action",
    ),
]
