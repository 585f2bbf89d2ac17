"""The Google Health API sandbox in tests: tokens of the Fitbit client, the webhook recorder."""

from __future__ import annotations

import pytest

from sources.providers.fitbit.provider import Fitbit
from tests.sources.sandbox.oauth import provider_tokens
from tests.sources.sandbox.recorder import recorder  # noqa: F401 - a fixture for this folder

HEALTH = "https://www.googleapis.com/auth/googlehealth."
HEALTH_SCOPES = " ".join(
    f"{HEALTH}{family}.readonly"
    for family in ("activity_and_fitness", "health_metrics_and_measurements", "sleep")
)


@pytest.fixture(autouse=True)
def health_keyset_forgotten():
    """Each test's sandbox has new signing keys: no keyset or refetch budget carried over from
    another test, in this process or in the shared cache (pymongo, outside Django's test DB)."""
    from django.core.cache import cache

    from sources.providers.fitbit.webhooks import keyset_forget

    keyset_forget()
    cache.clear()


@pytest.fixture
def health_token(client) -> dict:
    return provider_tokens(client, Fitbit, scope=HEALTH_SCOPES)
