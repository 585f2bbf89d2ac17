"""The provider field has no choices: it is validated against the registry, so a new provider
needs no migration, and staff pages still name providers as the registry does."""

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from sources.models import PendingRevocation, UserDataSource
from sources.providers import PROVIDERS
from tests.factories import UserDataSourceFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("model", [UserDataSource, PendingRevocation])
def test_the_field_has_no_choices_and_refuses_an_unknown_provider(model):
    field = model._meta.get_field("provider")
    assert not field.choices
    with pytest.raises(ValidationError) as refused:
        field.clean("myspace", None)
    assert [e.code for e in refused.value.error_list] == ["unknown_provider"]
    assert refused.value.messages == ["Unknown provider myspace: not in the provider registry."]
    for provider_id in PROVIDERS:
        assert field.clean(provider_id, None) == provider_id


def test_an_attacker_length_value_is_refused_without_repeating_it_whole():
    field = UserDataSource._meta.get_field("provider")
    with pytest.raises(ValidationError) as refused:
        field.run_validators("x" * 5000)
    assert all(len(message) < 200 for message in refused.value.messages)


def test_a_connection_with_an_unknown_provider_does_not_validate():
    connection = UserDataSourceFactory()
    connection.provider = "myspace"
    with pytest.raises(ValidationError) as refused:
        connection.full_clean()
    assert "provider" in refused.value.message_dict


def test_the_display_is_the_registered_name():
    connection = UserDataSourceFactory()
    assert connection.get_provider_display() == PROVIDERS[connection.provider].name
    pending = PendingRevocation(user=connection.user, provider=connection.provider)
    assert pending.get_provider_display() == PROVIDERS[connection.provider].name
    # A row left by a provider since removed from the registry still shows something.
    assert PendingRevocation(provider="retired").get_provider_display() == "retired"


@pytest.mark.parametrize(
    "changelist",
    ["admin:sources_userdatasource_changelist", "admin:sources_pendingrevocation_changelist"],
)
def test_staff_filter_by_provider_names_from_the_registry(client, changelist):
    staff = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(staff, backend="django.contrib.auth.backends.ModelBackend")
    page = client.get(reverse(changelist))
    assert page.status_code == 200
    choices = [
        c["display"]
        for spec in page.context["cl"].filter_specs
        for c in spec.choices(page.context["cl"])
        if spec.title == "provider"
    ]
    assert choices == ["All", *(provider.name for provider in PROVIDERS.values())]


def test_staff_filter_by_provider_keeps_only_that_providers_rows(client):
    staff = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(staff, backend="django.contrib.auth.backends.ModelBackend")
    connection = UserDataSourceFactory()
    other = next(p for p in PROVIDERS if p != connection.provider)
    url = reverse("admin:sources_userdatasource_changelist")
    shown = client.get(url, {"provider__exact": connection.provider}).context["cl"].result_list
    assert [c.pk for c in shown] == [connection.pk]
    assert list(client.get(url, {"provider__exact": other}).context["cl"].result_list) == []
