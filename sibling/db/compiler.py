"""django-mongodb-backend's compilers, with each query written in forms every server answers
alike (see the package): flat ``$match``, dotted ``$project``/``$addFields`` paths, and
fixed-offset time zones as ``+hh:mm``."""

from __future__ import annotations

import re
from typing import Any

from django_mongodb_backend import compiler as mongo
from django_mongodb_backend.query import MongoQuery

# Stages whose document is a field specification: a nested document in one is a set of paths.
FIELD_SPEC_STAGES = frozenset({"$project", "$addFields", "$set"})
# The expression operators that take a "timezone".
DATE_OPERATORS = frozenset(
    {
        "$dateAdd", "$dateDiff", "$dateFromParts", "$dateFromString", "$dateSubtract",
        "$dateToParts", "$dateToString", "$dateTrunc", "$dayOfMonth", "$dayOfWeek",
        "$dayOfYear", "$hour", "$isoDayOfWeek", "$isoWeek", "$isoWeekYear", "$millisecond",
        "$minute", "$month", "$second", "$week", "$year",
    }
)  # fmt: skip
# "-10", "+0530", "UTC-10:00" (how Django names fixed-offset zones); "-10:00" is left as it is.
_OFFSET_ZONE = re.compile(r"^(?:UTC|GMT)?([+-])(\d{1,2})(?::?(\d{2}))?$")


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


def _is_sub_spec(value: Any) -> bool:
    """A nested document of field names (``{"app_label": 1}``), not an operator expression
    (``{"$concat": [...]}``) and not empty (``{}`` has no paths to write)."""
    return (
        isinstance(value, dict)
        and bool(value)
        and all(isinstance(key, str) and key and not key.startswith("$") for key in value)
    )


def _leaf_paths(path: str, value: Any) -> list[tuple[str, Any]]:
    if not _is_sub_spec(value):
        return [(path, value)]
    return [leaf for key, sub in value.items() for leaf in _leaf_paths(f"{path}.{key}", sub)]


def _collide(a: str, b: str) -> bool:
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def dotted_fields(spec: dict[str, Any]) -> dict[str, Any]:
    """The same ``$project``/``$addFields`` specification with nested documents written as
    dotted paths: ``{"ct": {"app_label": 1}}`` becomes ``{"ct.app_label": 1}`` and
    ``{"ct": {"model": "$ct.model"}}`` becomes ``{"ct.model": "$ct.model"}``. MongoDB reads both
    forms alike; the embedded server answers the nested one wrongly (the literal ``1``, or a
    ``ct`` replaced by ``{"model": ...}``). Operator expressions and ``{}`` are leaves. A field
    that another key of the same stage also addresses (``"ct"`` beside ``"ct.x"``), or whose
    paths would collide with another's, is kept as it was: the rewrite never turns a valid
    specification into an invalid one, nor changes one it cannot read with certainty."""
    if not isinstance(spec, dict) or not any(_is_sub_spec(v) for v in spec.values()):
        return spec
    leaves = {key: _leaf_paths(key, value) for key, value in spec.items()}
    dotted: dict[str, Any] = {}
    for key, value in spec.items():
        if _is_sub_spec(value):
            mine = [path for path, _ in leaves[key]]
            others = [p for other, paths in leaves.items() if other != key for p, _ in paths]
            clash = (
                len(set(mine)) < len(mine)
                or any(_collide(key, other) for other in spec if other != key)
                or any(_collide(a, b) for a in mine for b in others)
            )
            if not clash:
                dotted.update(leaves[key])
                continue
        dotted[key] = value
    return dotted


def offset_zone(name: str) -> str:
    """A fixed-offset zone as ``+hh:mm``, the form every server accepts; other names as given.
    Django names ``Etc/GMT+10`` "-10" and ``timezone(timedelta(hours=-10))`` "UTC-10:00"; the
    embedded server refuses both, and MongoDB documents neither "UTC-10:00" nor anything but
    Olson names and ``+/-hh[[:]mm]`` offsets."""
    match = _OFFSET_ZONE.match(name)
    if match is None:
        return name
    sign, hours, minutes = match.groups()
    return f"{sign}{int(hours):02d}:{minutes or '00'}"


def offset_zones(mql: Any) -> Any:
    """The same MQL with the ``timezone`` of every date operator written by
    :func:`offset_zone`. Returns ``mql`` itself when nothing changes (a ``$sort``'s SON stays
    a SON); ``$literal`` values are data and never looked into."""
    if isinstance(mql, list):
        items = [offset_zones(item) for item in mql]
        return items if any(a is not b for a, b in zip(items, mql, strict=True)) else mql
    if not isinstance(mql, dict):
        return mql
    changed: dict[str, Any] = {}
    for key, value in mql.items():
        if key == "$literal":
            continue
        new = offset_zones(value)
        if (
            key in DATE_OPERATORS
            and isinstance(new, dict)
            and isinstance(new.get("timezone"), str)
            and offset_zone(new["timezone"]) != new["timezone"]
        ):
            new = {**new, "timezone": offset_zone(new["timezone"])}
        if new is not value:
            changed[key] = new
    if not changed:
        return mql
    rewritten = type(mql)(mql)
    rewritten.update(changed)
    return rewritten


def conformant_pipeline(pipeline: list[Any]) -> list[Any]:
    """The pipeline with its field specifications dotted (:func:`dotted_fields`), in nested
    pipelines too (``$lookup``, ``$unionWith``, ``$facet``), and its zones as offsets."""
    # offset_zones walks the nested pipelines too: once, over the whole.
    return offset_zones(_dotted_pipeline(pipeline))


def _dotted_pipeline(pipeline: list[Any]) -> list[Any]:
    stages = []
    for stage in pipeline:
        if isinstance(stage, dict) and len(stage) == 1:
            ((name, body),) = stage.items()
            if name in FIELD_SPEC_STAGES and isinstance(body, dict):
                body = dotted_fields(body)
            elif name in ("$lookup", "$unionWith") and isinstance(body, dict):
                if isinstance(body.get("pipeline"), list):
                    body = {**body, "pipeline": _dotted_pipeline(body["pipeline"])}
            elif name == "$facet" and isinstance(body, dict):
                body = {facet: _dotted_pipeline(stages_) for facet, stages_ in body.items()}
            stage = {name: body}
        stages.append(stage)
    return stages


class ConformantQuery(MongoQuery):
    def get_pipeline(self) -> list[Any]:
        return conformant_pipeline(super().get_pipeline())


class FlatMatchMixin:
    query_class = ConformantQuery

    def build_query(self, columns: Any = None) -> Any:
        query = super().build_query(columns)  # type: ignore[misc]
        # Updates and deletes send the filter alone, without a pipeline.
        query.match_mql = offset_zones(flat_match(query.match_mql))
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
