"""The social-auth routes the connect flows use, and only those.

social_django's own URLconf also mounts ``disconnect/<backend>/``, which removes the social
association without revoking the grant at the provider or forgetting the credentials Sibling
holds; disconnecting goes through the app's own flow (``sources.services.connection_disconnect``)
instead. The names are social_django's, so ``{% url 'social:begin' ... %}`` keeps working.
"""

from django.urls import path
from social_django import views

app_name = "social"

urlpatterns = [
    path("login/<str:backend>/", views.auth, name="begin"),
    path("complete/<str:backend>/", views.complete, name="complete"),
]
