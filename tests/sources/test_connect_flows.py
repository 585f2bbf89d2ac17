"""Connect flows across providers, over real HTTP against the sandbox. Each provider's own
connect, refresh, revoke and error tests come from its auth mode's base in
tests/sources/providers/kit.py; these are about what providers share."""

import pytest
from django.urls import reverse
from social_django.models import UserSocialAuth

from sources.models import UserDataSource
from sources.providers import PROVIDERS
from sources.providers.google import GoogleProvider
from tests.sources.browsing import Browser
from tests.sources.conftest import PASSWORD
from tests.sources.providers.kit import hooks, provider_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def browser(sandbox, person):
    browser = Browser(sandbox.url)
    browser.log_in(person.username, PASSWORD)
    return browser


def test_one_google_account_is_linked_for_two_google_providers(browser, person):
    google = [p for p in PROVIDERS.values() if issubclass(p, GoogleProvider)][:2]
    if len(google) < 2:
        pytest.skip("fewer than two Google providers registered")
    first, second = google
    account = hooks(first.id).account()
    for provider in google:
        page = hooks(provider.id).consent(browser, account)
        assert f"{provider.name} is connected" in page.text
    linked = {s.provider for s in UserSocialAuth.objects.filter(user=person)}
    assert linked == {first.id, second.id}
    # Each connection holds the scopes of its own provider, not the other's.
    for provider, other in ((first, second), (second, first)):
        granted = set(UserDataSource.objects.get(user=person, provider=provider.id).granted_scopes)
        assert set(provider.scopes) <= granted
        assert not (set(other.scopes) - set(provider.scopes)) & granted


def test_connecting_starts_the_first_sync_at_once(browser, person, settings):
    settings.SIBLING_SYNC_ON_DUE = True  # tasks run inline in tests, so the sync ends here
    provider = provider_for(auth_mode="api_key")
    browser.post(
        reverse("sources:connect", args=[provider.id]), {"api_key": hooks(provider.id).good_key()}
    )
    connection = UserDataSource.objects.get(user=person, provider=provider.id)
    assert connection.last_success_at is not None and connection.records_stored > 0
    assert connection.runs.get().trigger == "backfill"
    page = browser.get(reverse("sources:connections")).text
    assert f"<dd>{connection.records_stored}</dd>" in page
