import json
import os
from io import StringIO

import pytest
from django.core.management import call_command

from ingestion.models import ApiToken, WebhookEvent

# The suite's own server (tests/plugin.py), not one that MONGODB_URI names.
EMBEDDED = os.environ.get("SIBLING_TEST_EMBEDDED") == "1"


@pytest.mark.django_db
def test_every_model_change_has_its_committed_migration():
    out = StringIO()
    call_command("makemigrations", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("model", "name", "lookup"),
    [
        (WebhookEvent, "webhook_dedup", {"provider": "any-provider", "dedup_key": "k"}),
        (ApiToken, "api_token_digest", {"digest": "d"}),
    ],
)
def test_hot_unique_lookups_use_a_plain_unique_index(raw_db, model, name, lookup):
    collection = raw_db[model._meta.db_table]
    index = next(i for i in collection.list_indexes() if i["name"] == name)
    assert index["unique"] and "partialFilterExpression" not in index
    plan = json.dumps(collection.find(lookup).explain()["queryPlanner"]["winningPlan"])
    assert "IXSCAN" in plan and name in plan


@pytest.mark.skipif(
    not EMBEDDED, reason="shows a limitation of the embedded server's planner, not of MongoDB"
)
def test_the_embedded_planner_scans_past_the_backends_partial_unique_indexes(raw_db):
    """Why the migration above exists: the backend's form of a unique constraint (partial on
    $type) is never chosen for an equality lookup on the embedded server."""
    collection = raw_db["scratch_partial_unique"]
    collection.create_index(
        [("a", 1), ("b", 1)],
        unique=True,
        name="backend_form",
        partialFilterExpression={"a": {"$type": "string"}, "b": {"$type": "string"}},
    )
    try:
        plan = collection.find({"a": "x", "b": "y"}).explain()["queryPlanner"]["winningPlan"]
        assert plan["stage"] == "COLLSCAN"
    finally:
        collection.drop()
