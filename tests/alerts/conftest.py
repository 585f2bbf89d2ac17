"""The sandbox connections of the ingestion tests: alerts start where syncs fail."""

from tests.ingestion.conftest import (  # noqa: F401  (fixtures)
    key_connection,
    oauth_connection,
    person,
    sandbox,
)
