"""Staff see which alerts went out, read-only, without the person's address."""

import pytest
from django.test import Client

from alerts import services
from alerts.models import Incident
from sources.signals import STOPPED
from tests.factories import StaffFactory, UserDataSourceFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def incident():
    connection = UserDataSourceFactory(user=UserFactory(email="someone@private.example"))
    return services.incident_open(connection=connection, kind=STOPPED)


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_a_superuser_sees_alerts_but_not_the_address_and_cannot_change_them(incident):
    admin = signed_in(UserFactory(is_staff=True, is_superuser=True))
    listing = admin.get("/admin/alerts/incident/")
    assert listing.status_code == 200 and b"Syncing stopped" in listing.content
    page = admin.get(f"/admin/alerts/incident/{incident.pk}/change/")
    assert page.status_code == 200
    for answer in (listing, page):
        assert b"someone@private.example" not in answer.content
    assert admin.get("/admin/alerts/incident/add/").status_code == 403
    deleted = admin.post(f"/admin/alerts/incident/{incident.pk}/delete/", {"post": "yes"})
    assert deleted.status_code == 403
    assert Incident.objects.filter(pk=incident.pk).exists()


def test_staff_need_the_view_permission(incident):
    viewer = signed_in(StaffFactory(permissions=("alerts.view_incident",)))
    assert viewer.get("/admin/alerts/incident/").status_code == 200
    assert signed_in(StaffFactory()).get("/admin/alerts/incident/").status_code == 403
    person = signed_in(incident.user)
    assert person.get("/admin/alerts/incident/").status_code == 302  # to the admin login
