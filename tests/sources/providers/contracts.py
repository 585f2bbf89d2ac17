"""Contract checks: a provider's answer against the provider's own machine-readable contract.

Two kinds of contract are published by providers as code:

- **Google's discovery documents** (shipped in google-api-python-client): ``discovery_errors``
  checks a JSON answer against the response schema of a method (by its id, e.g.
  ``"<api>.users.messages.list"``), strictly: types, enums, 64-bit integers as decimal strings,
  RFC 3339 times, nested ``$ref``s and maps; a field the schema does not declare is an error.
  Google's error envelope is not in the documents; ``google_error_errors`` checks it against the
  shape Google documents (https://cloud.google.com/apis/design/errors#http_mapping).
- **OpenAPI Generator's typed Python models** (a provider's official SDK built that way):
  ``openapi_model_errors`` deserialises an answer into the model of the endpoint's response with
  type checking, and refuses any key a model does not declare (the SDK itself keeps unknown keys
  as additional properties, which would let a drift pass).

Each returns a list of readable errors (empty when the answer keeps the contract), so a test can
report every drift at once.
"""

from __future__ import annotations

import importlib
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import googleapiclient
import jsonschema
import pytest

DOCUMENTS = Path(googleapiclient.__file__).resolve().parent / "discovery_cache" / "documents"

# RFC 3339 as Google writes it (a "Z" or an offset; fractions of any length).
_DATE_TIME = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"
_FORMATS: dict[str, dict[str, Any]] = {
    # Proto3 JSON writes 64-bit integers as strings, so JavaScript keeps every digit.
    "int64": {"type": "string", "pattern": r"^-?\d+$"},
    "uint64": {"type": "string", "pattern": r"^\d+$"},
    "int32": {"type": "integer"},
    "uint32": {"type": "integer", "minimum": 0},
    "date-time": {"type": "string", "pattern": _DATE_TIME},
    "google-datetime": {"type": "string", "pattern": _DATE_TIME},
    "date": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"},
    "google-duration": {"type": "string", "pattern": r"^-?\d+(\.\d+)?s$"},
    "byte": {"type": "string", "pattern": r"^[A-Za-z0-9+/_-]*={0,2}$"},
}


@cache
def discovery_document(name: str, version: str) -> dict[str, Any]:
    """Google's discovery document ``<name>.<version>.json`` as google-api-python-client ships
    it."""
    return json.loads((DOCUMENTS / f"{name}.{version}.json").read_text())


def discovery_methods(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every method of a discovery document by its id."""
    found: dict[str, dict[str, Any]] = {}

    def walk(resource: dict[str, Any]) -> None:
        for method in resource.get("methods", {}).values():
            found[method["id"]] = method
        for child in resource.get("resources", {}).values():
            walk(child)

    walk(document)
    return found


def _json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """One discovery schema as JSON Schema: strict objects, formats as patterns."""
    if "$ref" in schema:
        return {"$ref": f"#/$defs/{schema['$ref']}"}
    kind = schema.get("type")
    out: dict[str, Any] = {}
    if kind == "any" or kind is None:
        return out
    if kind == "object":
        out["type"] = "object"
        out["properties"] = {
            name: _json_schema(value) for name, value in schema.get("properties", {}).items()
        }
        # A map (additionalProperties given) takes any key; a message takes only its fields.
        extra = schema.get("additionalProperties")
        out["additionalProperties"] = _json_schema(extra) if extra else False
        return out
    if kind == "array":
        out["type"] = "array"
        out["items"] = _json_schema(schema.get("items", {"type": "any"}))
        return out
    if kind == "string":
        out.update(_FORMATS.get(schema.get("format", ""), {"type": "string"}))
        if "enum" in schema:
            out["enum"] = schema["enum"]
        return out
    if kind == "integer":
        # A 64-bit integer field is a string; a 32-bit one a number.
        return dict(_FORMATS.get(schema.get("format", ""), {"type": "integer"}))
    if kind == "number":
        return {"type": "number"}
    if kind == "boolean":
        return {"type": "boolean"}
    raise ValueError(f"discovery type {kind!r} is not understood")


@cache
def _validator(name: str, version: str, ref: str) -> jsonschema.Draft202012Validator:
    document = discovery_document(name, version)
    schema = {
        "$defs": {key: _json_schema(value) for key, value in document["schemas"].items()},
        "$ref": f"#/$defs/{ref}",
    }
    return jsonschema.Draft202012Validator(schema)


def response_schema_name(name: str, version: str, method_id: str) -> str:
    """The schema a method answers with (its ``response.$ref``)."""
    method = discovery_methods(discovery_document(name, version))[method_id]
    return method["response"]["$ref"]


def schema_errors(name: str, version: str, ref: str, body: Any) -> list[str]:
    """Every way ``body`` breaks the discovery document's schema ``ref``."""
    validator = _validator(name, version, ref)
    return [
        f"{ref}{''.join(f'[{p!r}]' for p in error.absolute_path)}: {error.message}"
        for error in sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
    ]


def discovery_errors(name: str, version: str, method_id: str, body: Any) -> list[str]:
    """Every way ``body`` breaks the response schema of ``method_id`` in Google's discovery
    document ``<name>.<version>``; a method answering nothing (``Empty``, or no response at all)
    must answer an empty object or body."""
    method = discovery_methods(discovery_document(name, version))[method_id]
    if "response" not in method:
        return [] if body in (None, "", {}) else [f"{method_id} answers no body, got {body!r}"]
    return [
        f"{method_id}: {error}"
        for error in schema_errors(name, version, method["response"]["$ref"], body)
    ]


# Google's error envelope (https://cloud.google.com/apis/design/errors): the v1 "errors" list
# alongside code, message and status.
GOOGLE_ERROR = {
    "type": "object",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "additionalProperties": False,
            "properties": {
                "code": {"type": "integer"},
                "message": {"type": "string"},
                "status": {"type": "string", "pattern": r"^[A-Z_]+$"},
                "errors": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["message", "reason"],
                        "additionalProperties": False,
                        "properties": {
                            name: {"type": "string"}
                            for name in (
                                "domain",
                                "reason",
                                "message",
                                "location",
                                "locationType",
                                "extendedHelp",
                                "sendReport",
                            )
                        },
                    },
                },
                "details": {
                    "type": "array",
                    "items": {"type": "object", "required": ["@type"]},
                },
            },
        }
    },
}


def google_error_errors(body: Any) -> list[str]:
    """Every way ``body`` breaks Google's documented error envelope."""
    validator = jsonschema.Draft202012Validator(GOOGLE_ERROR)
    return [
        f"error{''.join(f'[{p!r}]' for p in error.absolute_path)}: {error.message}"
        for error in validator.iter_errors(body)
    ]


# --- OpenAPI Generator models -------------------------------------------------------------------


def _package(model_class: type) -> Any:
    return importlib.import_module(model_class.__module__.split(".")[0])


def openapi_model_errors(model_class: type, body: Any) -> list[str]:
    """Every way ``body`` breaks ``model_class`` (an OpenAPI Generator model of the provider's
    SDK): deserialised with type checking, required fields, enums and formats as the SDK checks
    them, and then no key any model along the way does not declare."""
    package = _package(model_class)
    utils = importlib.import_module(f"{package.__name__}.model_utils")
    exceptions = importlib.import_module(f"{package.__name__}.exceptions")
    configuration = package.Configuration()
    configuration.discard_unknown_keys = False
    try:
        model = utils.validate_and_convert_types(
            body,
            (model_class,),
            ["received_data"],
            True,  # keys as the API spells them
            True,  # check every type
            configuration=configuration,
        )
    except (exceptions.OpenApiException, TypeError, ValueError, KeyError) as err:
        return [f"{model_class.__name__}: {type(err).__name__}: {err}"]
    return [f"{model_class.__name__}{where}" for where in _unknown_keys(utils, model, "")]


def _enum_errors(model: Any, name: tuple[str, ...], value: Any, path: str) -> list[str]:
    """A value outside its enum (the SDK's own check of enums is switched off, so that a value
    added later does not break old clients; a sandbox must still keep to the values listed)."""
    allowed = getattr(model, "allowed_values", {}).get(name)
    if not allowed or value is None:
        return []
    values = value if isinstance(value, list) else [value]
    return [
        f"{path}: {item!r} is not one of {sorted(allowed.values())}"
        for item in values
        if item not in allowed.values()
    ]


def _declared(utils: Any, model: Any) -> set[str]:
    """The keys a model declares; a composed model (allOf, oneOf) declares its parts' keys too."""
    declared = set(model.openapi_types)
    if isinstance(model, utils.ModelComposed):
        for part in model._composed_instances:
            declared |= _declared(utils, part)
    return declared


def _unknown_keys(utils: Any, value: Any, path: str) -> list[str]:
    """Keys the models do not declare, anywhere in a deserialised answer (the SDK keeps them as
    additional properties)."""
    found: list[str] = []
    if isinstance(value, utils.ModelSimple):
        found += _enum_errors(value, ("value",), value.value, path)
    elif isinstance(value, (utils.ModelNormal, utils.ModelComposed)):
        # Each part of a composed model holds every key given to the whole (the keys of its
        # siblings as additional properties): only a key no part declares is unknown.
        store = dict(value._data_store)
        if isinstance(value, utils.ModelComposed):
            for part in value._composed_instances:
                store = {**part._data_store, **store}
        declared = _declared(utils, value)
        for key, item in store.items():
            if key not in declared:
                found.append(f"{path}.{key}: not in the contract")
            found += _enum_errors(value, (key,), item, f"{path}.{key}")
            found += _unknown_keys(utils, item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _unknown_keys(utils, item, f"{path}[{index}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            found += _unknown_keys(utils, item, f"{path}[{key!r}]")
    return found


def model_class_for(package_name: str, class_name: str) -> type:
    """An SDK's model class by name (``TransactionsSyncResponse`` ->
    ``<package>.model.transactions_sync_response``)."""
    module = re.sub(r"(?<!^)(?=[A-Z])", "_", class_name).lower()
    return getattr(importlib.import_module(f"{package_name}.model.{module}"), class_name)


# --- Recorded fixtures ---------------------------------------------------------------------------


def fixture_cases(recorded: dict[str, str], outside: dict[str, str]) -> list[Any]:
    """The parameters of a source's fixture test: each fixture the contract covers, and those it
    does not (push envelopes, say) skipped with the reason in their test id."""
    skipped = (
        pytest.param(name, id=f"{name}-not-in-the-contract", marks=pytest.mark.skip(reason=why))
        for name, why in outside.items()
    )
    return [*recorded, *skipped]


def fixtures_unlisted(provider_id: str, recorded: dict[str, str], outside: dict[str, str]) -> set:
    """Fixture files of the source that neither list names, and names without a file."""
    from tests.sources.providers.kit import fixture_path

    files = {path.stem for path in fixture_path(provider_id, "x").parent.glob("*.json")}
    return files ^ (set(recorded) | set(outside))


def google_fixture_errors(provider_id: str, api: tuple[str, str], name: str, method: str) -> list:
    """A Google source's fixture against the method whose answer it records ("error": Google's
    error envelope)."""
    from tests.sources.providers.kit import fixture

    body = fixture(provider_id, name)
    return google_error_errors(body) if method == "error" else discovery_errors(*api, method, body)
