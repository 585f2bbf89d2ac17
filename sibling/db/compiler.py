"""django-mongodb-backend's compilers, with each query's ``$match`` flattened (see the package)."""

from __future__ import annotations

from typing import Any

from django_mongodb_backend import compiler as mongo


def flat_match(mql: Any) -> Any:
    """The same filter with its top-level ``$and`` of plain field conditions merged into one
    document. A conjunct is merged only when all its keys are field names (not operators such as
    ``$or`` or ``$expr``) that no merged conjunct has yet; the others stay under ``$and``."""
    if not isinstance(mql, dict) or list(mql) != ["$and"]:
        return mql
    merged: dict[str, Any] = {}
    kept: list[Any] = []
    for conjunct in mql["$and"]:
        conjunct = flat_match(conjunct)
        if isinstance(conjunct, dict) and list(conjunct) == ["$and"]:
            kept.extend(conjunct["$and"])
        elif (
            isinstance(conjunct, dict)
            and conjunct
            and not any(key.startswith("$") for key in conjunct)
            and merged.keys().isdisjoint(conjunct)
        ):
            merged.update(conjunct)
        else:
            kept.append(conjunct)
    if kept:
        merged["$and"] = kept
    return merged


class FlatMatchMixin:
    def build_query(self, columns: Any = None) -> Any:
        query = super().build_query(columns)  # type: ignore[misc]
        query.match_mql = flat_match(query.match_mql)
        return query


class SQLCompiler(FlatMatchMixin, mongo.SQLCompiler):
    pass


class SQLInsertCompiler(mongo.SQLInsertCompiler):
    pass


class SQLDeleteCompiler(FlatMatchMixin, mongo.SQLDeleteCompiler):
    pass


class SQLUpdateCompiler(FlatMatchMixin, mongo.SQLUpdateCompiler):
    pass


class SQLAggregateCompiler(FlatMatchMixin, mongo.SQLAggregateCompiler):
    pass
