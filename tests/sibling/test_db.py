"""The backend sends multi-field filters flat, so that every server can answer them from an
index (sibling.db)."""

import json

import pytest
from django.db import connection
from django.db.models import Q
from django.test.utils import CaptureQueriesContext

from sibling.db.compiler import flat_match
from sources.models import UserDataSource
from tests.factories import UserDataSourceFactory


def test_a_conjunction_of_field_conditions_becomes_one_document():
    assert flat_match({"$and": [{"a": 1}, {"b": {"$in": [2, 3]}}]}) == {
        "a": 1,
        "b": {"$in": [2, 3]},
    }
    nested = {"$and": [{"a": 1}, {"$and": [{"b": 2}, {"c": 3}]}]}
    assert flat_match(nested) == {"a": 1, "b": 2, "c": 3}


def test_what_cannot_be_merged_stays_under_and():
    same_field = {"$and": [{"a": {"$gt": 1}}, {"a": {"$lt": 5}}]}
    assert flat_match(same_field) == {"a": {"$gt": 1}, "$and": [{"a": {"$lt": 5}}]}
    with_or = {"$and": [{"$or": [{"a": 1}, {"b": 1}]}, {"c": 1}]}
    assert flat_match(with_or) == {"c": 1, "$and": [{"$or": [{"a": 1}, {"b": 1}]}]}
    expression = {"$and": [{"$expr": {"$eq": ["$a", "$b"]}}]}
    assert flat_match(expression) == {"$and": [{"$expr": {"$eq": ["$a", "$b"]}}]}
    for untouched in ({}, {"a": 1}, {"$or": [{"a": 1}]}, {"$and": [{"a": 1}], "b": 2}):
        assert flat_match(untouched) == untouched


@pytest.mark.django_db
def test_orm_lookups_are_sent_flat_and_answered_from_an_index(raw_db):
    connection_ = UserDataSourceFactory(provider="plaid", external_account_id="item-7")
    lookup = UserDataSource.objects.filter(provider="plaid", external_account_id="item-7")
    with CaptureQueriesContext(connection) as queries:
        assert list(lookup) == [connection_]
        assert lookup.filter(status=connection_.status).update(notice="n") == 1
        assert UserDataSource.objects.filter(Q(notice="n") | Q(notice="m"), pk=connection_.pk)
    sent = " ".join(query["sql"] for query in queries.captured_queries)
    assert "{'external_account_id': 'item-7', 'provider': 'plaid'}" in sent
    assert "'$and'" not in sent.split("update_many")[1].split("[{'$set'")[0]

    table = raw_db[UserDataSource._meta.db_table]
    plan = table.find({"external_account_id": "item-7", "provider": "plaid"}).explain()
    assert "IXSCAN" in json.dumps(plan["queryPlanner"]["winningPlan"])
