from django.urls import path

from alerts import views

app_name = "alerts"
urlpatterns = [
    path("alerts/stop/<str:token>/", views.emails_stop, name="emails_stop"),
]
