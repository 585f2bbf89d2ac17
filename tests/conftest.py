import pytest

from sibling.mongo import plain_database


@pytest.fixture
def raw_db():
    """The test database through a client that does not decrypt: documents as stored."""
    return plain_database()
