from django.urls import path
from drf_spectacular.views import SpectacularAPIView

from ingestion import views
from ingestion.api import EventsCreateApi
from ingestion.records_api import ConnectionsListApi, RecordDetailApi, RecordsListApi

app_name = "ingestion"
urlpatterns = [
    path("settings/api-tokens/", views.api_tokens, name="api_tokens"),
    path(
        "settings/api-tokens/<str:token_id>/revoke/",
        views.api_token_revoke_view,
        name="api_token_revoke",
    ),
    path("settings/privacy/", views.privacy, name="privacy"),
    path("my-data/", views.my_data, name="my_data"),
    path("my-data/export/", views.my_data_export, name="my_data_export"),
    path("api/events/", EventsCreateApi.as_view(), name="events_create"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api_schema"),
    path("api/v1/records/", RecordsListApi.as_view(), name="records_list"),
    path("api/v1/records/<str:record_id>/", RecordDetailApi.as_view(), name="records_detail"),
    path("api/v1/connections/", ConnectionsListApi.as_view(), name="connections_list"),
]
