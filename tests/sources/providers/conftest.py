"""Fixtures of every provider's tests: the provider of the test's folder and a connection to it
made against the sandbox."""

from __future__ import annotations

import pytest

from sources.models import UserDataSource
from sources.providers import Provider, get_provider
from tests.sources.providers.kit import sandbox_connection


@pytest.fixture
def sandbox(sandbox, settings):
    """The sources' sandbox (this test's live server, over HTTP), with short backfills."""
    settings.SIBLING_BACKFILL_DAYS = 14
    return sandbox


@pytest.fixture
def provider(request) -> type[Provider]:
    """The provider whose folder holds the test (tests/sources/providers/<id>/...)."""
    parts = request.module.__name__.split(".")
    return get_provider(parts[parts.index("providers") + 1])


@pytest.fixture
def connection(sandbox, person, provider) -> UserDataSource:
    """A connection of ``person`` to the folder's provider, made the real way in the sandbox."""
    return sandbox_connection(person, provider)
