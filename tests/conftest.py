from collections.abc import Iterator
from typing import Any

import pytest

from sibling.mongo import plain_database

# Collections only `migrate` fills (from the models) and no test changes.
FILLED_BY_MIGRATE = frozenset({"django_content_type", "auth_permission"})


@pytest.fixture(scope="session", autouse=True)
def flush_keeps_what_migrate_made() -> Iterator[None]:
    """A cheaper flush after each test, with the same result.

    MongoDB has no transaction to roll a test back, so every test that touches the database
    ends with Django's flush: it empties every collection, then re-sends post_migrate, which
    rebuilds every content type and permission (about 0.3 s a test, a third of the suite's
    time). Those rows come from the models alone, so the flush keeps them, and re-runs only the
    project's own after-migrate setup (indexes, schedules), whose collections it emptied.
    """
    from django.apps import apps
    from django.core.management.commands import flush

    from ingestion.signals import setup_after_migrate as ingestion_setup
    from sibling.db.base import DatabaseOperations
    from sibling.signals import setup_after_migrate as sibling_setup

    def execute_sql_flush(self: DatabaseOperations, tables: list[str]) -> None:
        database = self.connection.database
        for table in tables:
            if not table.startswith("system.") and table not in FILLED_BY_MIGRATE:
                database[table].delete_many({})

    def project_setup(verbosity: int, interactive: bool, db: str, **kwargs: Any) -> None:
        for setup, label in ((sibling_setup, "sibling"), (ingestion_setup, "ingestion")):
            setup(sender=None, app_config=apps.get_app_config(label), using=db)

    patch = pytest.MonkeyPatch()
    patch.setattr(DatabaseOperations, "execute_sql_flush", execute_sql_flush)
    patch.setattr(flush, "emit_post_migrate_signal", project_setup)
    yield
    patch.undo()


@pytest.fixture
def raw_db():
    """The test database through a client that does not decrypt: documents as stored."""
    return plain_database()
