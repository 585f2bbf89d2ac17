"""Helpers for the sandbox tests: consent and token exchange with a registered Google provider."""

from __future__ import annotations

import pytest

from .oauth import google_tokens
from .recorder import recorder  # noqa: F401 - a fixture for this folder


@pytest.fixture
def google_token(client) -> dict:
    """Tokens of the first registered Google provider's client, for its scopes."""
    return google_tokens(client)
