"""The records API's OpenAPI schema (drf-spectacular), and requests generated from it by
schemathesis against the app (WSGI), with real tokens and a little data: never a server error,
every answer as documented."""

from __future__ import annotations

import pytest
from schemathesis import GenerationMode

from ingestion.authentication import api_token_create, service_token_create
from ingestion.models import ApiToken
from sibling.people import person_of
from tests.api_schema import schema_statuses
from tests.factories import UserDataSourceFactory, UserFactory
from tests.ingestion.records_api_helpers import kind_of, store

pytestmark = pytest.mark.django_db
V1 = ("/api/v1/records/", "/api/v1/records/{record_id}/", "/api/v1/connections/")


@pytest.fixture
def schema_json(client):
    response = client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    return response.json()


def test_the_schema_describes_the_records_api(schema_json):
    assert set(V1) <= set(schema_json["paths"])
    listing = schema_json["paths"]["/api/v1/records/"]["get"]
    names = {p["name"] for p in listing["parameters"]}
    assert names == {
        "category",
        "kind",
        "provider",
        "since",
        "until",
        "changed_since",
        "person",
        "page_size",
        "cursor",
    }
    page_size = next(p for p in listing["parameters"] if p["name"] == "page_size")
    assert page_size["schema"]["maximum"] == 500
    category = next(p for p in listing["parameters"] if p["name"] == "category")
    assert set(category["schema"]["enum"]) == {"external", "behavioral", "volunteered"}
    assert {"200", "400", "401", "403", "404", "429"} <= set(listing["responses"])
    assert listing["security"] == [{"readTokenAuth": []}]
    assert schema_json["components"]["securitySchemes"]["readTokenAuth"]["scheme"] == "bearer"
    # Examples: a page and a bad filter.
    examples = listing["responses"]["200"]["content"]["application/json"]["examples"]
    assert any("results" in example["value"] for example in examples.values())
    record = schema_json["components"]["schemas"]["Record"]
    assert set(record["required"]) >= {"id", "person", "category", "kind", "data", "updated_at"}
    connection = schema_json["components"]["schemas"]["Connection"]
    assert not {"credentials", "cursors", "account_label"} & set(connection["properties"])


@pytest.fixture
def reader_secrets(db, settings):
    settings.SIBLING_RECORDS_API_SETTLE_S = 0
    person = UserFactory()
    store(person, kind_of("volunteered"), 3)
    store(person, kind_of("behavioral"), 2)
    UserDataSourceFactory(user=person)
    own = api_token_create(user=person, name="Schema", scopes=[ApiToken.Scope.RECORDS_READ])
    service = service_token_create(
        name="Schema", scopes=["read:behavioral"], person=person_of(person)
    )
    return [own.secret, service.secret]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("caller", ["person", "service"])
def test_the_records_api_conforms_to_its_schema(reader_secrets, mode, caller):
    """Generated requests, valid and invalid: never a 5xx, each answer documented."""
    secret = reader_secrets[0 if caller == "person" else 1]
    seen = schema_statuses(secret=secret, mode=mode, max_examples=25, path_regex="^/api/v1/")
    assert seen <= {200, 400, 401, 403, 404}, seen
    if mode == GenerationMode.POSITIVE:
        assert 200 in seen
