"""Test session setup that must happen before Django reads its settings.

Starts one throwaway in-memory database server for the whole session (unless MONGODB_URI names a
server to use instead, such as a real mongod) and gives the session its own master key.
"""

from __future__ import annotations

import os

import pytest

from sibling.embedded import EphemeralServer
from sibling.master_key import master_key_generate

_server: EphemeralServer | None = None


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(
    early_config: pytest.Config, parser: object, args: object
) -> None:
    global _server
    os.environ["DEBUG"] = "1"
    os.environ.setdefault("SIBLING_MASTER_KEY", master_key_generate())
    os.environ["MONGODB_NAME"] = "sibling"
    os.environ["SIBLING_KEY_VAULT_NAMESPACE"] = "test_sibling_encryption.__keyVault"
    os.environ["SIBLING_Q_SYNC"] = "1"
    # Tests start syncs themselves; those that test the immediate sync switch it on.
    os.environ["SIBLING_SYNC_ON_DUE"] = "0"
    if not os.environ.get("MONGODB_URI"):
        _server = EphemeralServer().start()
        os.environ["MONGODB_URI"] = _server.uri
        os.environ["SIBLING_TEST_EMBEDDED"] = "1"  # for tests of the embedded server's ways


def pytest_unconfigure(config: pytest.Config) -> None:
    if _server is not None:
        _server.stop()
