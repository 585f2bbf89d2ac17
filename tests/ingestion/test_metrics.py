"""/metrics: the exposition prometheus_client writes, read back with its parser."""

import pytest
from django.urls import reverse
from prometheus_client.parser import text_string_to_metric_families

from ingestion.metrics import metrics_text
from ingestion.models import QuarantinedItem
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db(transaction=True)

# A label value as hostile as a label value gets: a quote, a backslash and a newline.
ODD = 'say "hi"\\ then\nleave'


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_label_values_are_escaped_and_parse_back_unchanged():
    QuarantinedItem.objects.create(user=UserFactory(), provider=ODD, stream="s", reason="r")
    QuarantinedItem.objects.create(user=UserFactory(), provider=ODD, stream="s", reason="r")
    parsed = samples(metrics_text())
    assert parsed[("sibling_quarantined_items", (("provider", ODD),))] == 2


def test_every_family_is_there_with_its_type():
    families = {f.name: f.type for f in text_string_to_metric_families(metrics_text())}
    assert families == {
        "sibling_sync_runs": "counter",
        "sibling_records_ingested": "counter",
        "sibling_provider_api_calls": "counter",
        "sibling_provider_rate_limited": "counter",
        "sibling_sync_deferrals": "counter",
        "sibling_quarantined_items": "gauge",
        "sibling_connections": "gauge",
        "sibling_oldest_due_connection_age_seconds": "gauge",
        "sibling_queue_depth": "gauge",
    }


def test_a_person_is_refused_and_staff_read_them(client):
    client.force_login(UserFactory(), backend="django.contrib.auth.backends.ModelBackend")
    assert client.get(reverse("metrics")).status_code == 403
    client.force_login(
        UserFactory(is_staff=True), backend="django.contrib.auth.backends.ModelBackend"
    )
    response = client.get(reverse("metrics"))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert "no-cache" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]
    assert "sibling_queue_depth" in response.content.decode()
