import pytest

from tests.factories import UserFactory

PASSWORD = "correct horse battery staple"


@pytest.fixture
def sandbox(live_server, settings):
    """Every sandboxed provider talks to the sandbox of this test's live server, over HTTP."""
    settings.SIBLING_SANDBOX_BASE_URL = f"{live_server.url}/sandbox"
    return live_server


@pytest.fixture
def person(db):
    return UserFactory()


@pytest.fixture
def signed_in(client, person):
    client.force_login(person, backend="django.contrib.auth.backends.ModelBackend")
    return client
