"""Gmail's sandbox in tests: tokens of the Gmail client, and the webhook recorder."""

from __future__ import annotations

import pytest

from sources.providers.gmail.provider import Gmail
from tests.sources.sandbox.oauth import provider_tokens
from tests.sources.sandbox.recorder import recorder  # noqa: F401 - a fixture for this folder

GMAIL_READONLY = "https://www.googleapis.com/auth/gmail.readonly"


@pytest.fixture
def gmail_token(client) -> dict:
    return provider_tokens(client, Gmail, scope=GMAIL_READONLY)
