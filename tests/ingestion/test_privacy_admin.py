"""Staff answer data requests from a person's privacy view; the person reads the ledger."""

import io
import zipfile

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from ingestion.models import AccessLedgerEntry, ErasureRecord
from sources.models import UserDataSource
from tests.factories import UserDataSourceFactory, UserFactory

pytestmark = pytest.mark.django_db
PASSWORD = "correct horse battery staple"  # every factory user's


@pytest.fixture
def staff_client(client):
    client.force_login(
        UserFactory(is_staff=True, is_superuser=True),
        backend="django.contrib.auth.backends.ModelBackend",
    )
    return client


@pytest.fixture
def subject():
    person = UserFactory(email="subject@example.com")
    UserDataSourceFactory(user=person, records_stored=12)
    return person


def test_only_staff_reach_the_privacy_views(client, subject):
    client.force_login(subject, backend="django.contrib.auth.backends.ModelBackend")
    response = client.get(reverse("person_privacy", args=[subject.pk]))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_find_a_person_and_see_connections_counts_and_ledger(staff_client, subject):
    found = staff_client.get(reverse("privacy_search"), {"q": "subject@example.com"})
    assert reverse("person_privacy", args=[subject.pk]) in found.content.decode()
    page = staff_client.get(reverse("person_privacy", args=[subject.pk])).content.decode()
    provider = UserDataSource.objects.get(user=subject).provider
    assert provider in page and "external_data" in page and "Nothing yet." in page


def test_a_staff_export_needs_a_reason_and_the_person_sees_it(staff_client, client, subject):
    url = reverse("person_privacy", args=[subject.pk])
    refused = staff_client.post(url, {"action": "export", "reason": " "})
    assert "Give the reason" in refused.content.decode()
    assert not AccessLedgerEntry.objects.exists()

    response = staff_client.post(url, {"action": "export", "reason": "data request #7"})
    assert response.status_code == 200 and response.streaming
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    assert "connections.jsonl" in archive.namelist()
    entry = AccessLedgerEntry.objects.get(subject=subject)
    assert (entry.action, entry.reason) == ("export", "data request #7")

    staff_client.logout()
    client.force_login(subject, backend="django.contrib.auth.backends.ModelBackend")
    page = client.get(reverse("ingestion:privacy")).content.decode()
    assert "data request #7" in page and "Sibling staff" in page


def test_erasure_from_admin_needs_the_username_and_the_staff_members_password(
    staff_client, subject
):
    url = reverse("person_privacy", args=[subject.pk])
    refused = staff_client.post(
        url, {"action": "erase", "confirm": "someone else", "password": PASSWORD}
    )
    assert "Type the person" in refused.content.decode()
    unconfirmed = staff_client.post(url, {"action": "erase", "confirm": subject.username})
    assert "Your own password" in unconfirmed.content.decode()
    assert get_user_model().objects.filter(pk=subject.pk).exists()
    staff_client.post(url, {"action": "erase", "confirm": subject.username, "password": PASSWORD})
    assert not get_user_model().objects.filter(pk=subject.pk).exists()
    assert ErasureRecord.objects.get().counts["connections"] == 1
