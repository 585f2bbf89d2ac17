"""The system check refuses an incomplete provider declaration, one error per missing piece.

Each test declares a small provider here and checks it directly: the registered providers are
left alone (test_registry checks that they pass).
"""

from typing import ClassVar

import pytest
from django.core.checks import Error
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from ingestion.schemas import FieldSpec, Kind
from sources import checks
from sources.checks import declaration_errors, kind_conflicts, provider_declarations_check
from sources.providers.base import (
    ApiKeyProvider,
    Budget,
    HostedLinkProvider,
    OAuth2Provider,
    Periodic,
    Provider,
    Stream,
)

DIARY = Kind("test_diary_entry", "behavioral", {"text": FieldSpec(str)})
LEDGER = Kind("test_ledger_line", "external", {"amount": FieldSpec(float)})


class Complete(ApiKeyProvider):
    """A declaration the check accepts (outside development: it has no sandbox module)."""

    id = "test_complete"
    name = "Complete"
    category = "behavioral"
    streams = (Stream("entries", kind="test_diary_entry"),)
    kinds = (DIARY,)
    urls: ClassVar[dict[str, str]] = {"api": "https://api.example.com"}
    sandbox_paths: ClassVar[dict[str, str]] = {"api": "/complete"}
    client_path = "ingestion.clients.SyncClient"
    processor_path = "ingestion.schemas.record_validate"
    periodic = (Periodic("test-complete-renew", "ingestion.schemas.kinds_all", 60),)


def ids(provider: type[Provider], *, sandbox_allowed: bool = False) -> list[str]:
    errors = declaration_errors(provider, sandbox_allowed=sandbox_allowed)
    assert all(isinstance(e, Error) for e in errors)
    return [e.id for e in errors]


def test_a_complete_declaration_passes():
    assert ids(Complete) == []


@pytest.mark.parametrize("attribute", ["id", "name", "category", "auth_mode"])
def test_missing_identity_fields(attribute):
    incomplete = type("Incomplete", (Complete,), {attribute: ""})
    errors = declaration_errors(incomplete, sandbox_allowed=False)
    assert [e.id for e in errors] == [checks.E_MISSING]
    assert f"declares no {attribute}" in errors[0].msg


def test_a_declaration_without_any_identity_names_its_class():
    class Bare(Provider):
        pass

    errors = declaration_errors(Bare, sandbox_allowed=False)
    assert [e.id for e in errors].count(checks.E_MISSING) == 4
    assert "Provider tests.sources.test_checks.Bare: declares no id." == errors[0].msg


def test_unknown_category_and_auth_mode():
    class Odd(Complete):
        category = "telepathic"
        auth_mode = "carrier_pigeon"
        kinds = ()
        streams = ()

    assert ids(Odd) == [checks.E_CATEGORY, checks.E_AUTH_MODE]


def test_an_oauth2_provider_whose_backend_cannot_be_built():
    class NoBackend(OAuth2Provider):
        id = "test_no_backend"
        name = "No backend"
        category = "behavioral"
        backend_base = None  # not a class: type() refuses it

    errors = declaration_errors(NoBackend, sandbox_allowed=False)
    assert [e.id for e in errors] == [checks.E_BACKEND]
    assert "cannot be built" in errors[0].msg


def test_an_oauth2_provider_whose_backend_is_not_a_social_auth_backend():
    class NotSocial(OAuth2Provider):
        id = "test_not_social"
        name = "Not social"
        category = "behavioral"
        backend_base = object

    assert ids(NotSocial) == [checks.E_BACKEND]


def test_a_complete_oauth2_provider_passes():
    class Standard(OAuth2Provider):
        id = "test_standard"
        name = "Standard"
        category = "behavioral"
        urls: ClassVar[dict[str, str]] = {"authorize": "https://a.example", "token": "https://t"}
        sandbox_paths: ClassVar[dict[str, str]] = {"authorize": "/a", "token": "/t"}

    assert ids(Standard) == []
    assert Standard.backend().name == "test_standard"


def test_an_oauth2_provider_without_its_authorize_or_token_endpoint():
    class NoEndpoints(OAuth2Provider):
        id = "test_no_endpoints"
        name = "No endpoints"
        category = "behavioral"
        urls: ClassVar[dict[str, str]] = {"token": "https://t.example"}
        sandbox_paths: ClassVar[dict[str, str]] = {"token": "/t"}

    errors = declaration_errors(NoEndpoints, sandbox_allowed=False)
    assert [e.id for e in errors] == [checks.E_BACKEND]
    assert "no authorize endpoint" in errors[0].msg


@pytest.mark.parametrize(
    ("budgets", "says"),
    [
        ((Budget("user", 10, 60, per="person"),), "is per 'person'"),
        ((Budget("user", 0, 60),), "positive limit"),
        ((Budget("user", 10, 0),), "positive limit"),
        ((Budget("user", 10, 60, costs={"list": -1}),), "no negative cost"),
        ((Budget("user", 10, 60), Budget("user", 20, 60)), "unique identifier"),
        ((Budget("per user", 10, 60),), "unique identifier"),
    ],
)
def test_a_budget_that_cannot_be_charged_as_declared(budgets, says):
    errors = declaration_errors(
        type("Budgeted", (Complete,), {"budgets": budgets}), sandbox_allowed=False
    )
    assert [e.id for e in errors] == [checks.E_BUDGET]
    assert says in errors[0].msg
    assert ids(type("Budgeted", (Complete,), {"budgets": (Budget("user", 10, 60),)})) == []


def test_a_hosted_link_without_its_script_or_a_called_endpoint():
    class Linked(HostedLinkProvider):
        id = "test_linked"
        name = "Linked"
        category = "external"
        link_connect_urls = ("api", "auth")
        urls: ClassVar[dict[str, str]] = {"api": "https://api.example"}
        sandbox_paths: ClassVar[dict[str, str]] = {"api": "/api"}

    errors = declaration_errors(Linked, sandbox_allowed=False)
    assert [e.id for e in errors] == [checks.E_LINK_URLS]
    assert "(link_script, auth)" in errors[0].msg

    class Complete(Linked):
        link_connect_urls = ("api",)
        urls: ClassVar[dict[str, str]] = {"api": "https://a.example", "link_script": "https://s"}
        sandbox_paths: ClassVar[dict[str, str]] = {"api": "/api", "link_script": "/s.js"}

    assert ids(Complete) == []


def test_a_stream_whose_kind_is_not_declared():
    class Undeclared(Complete):
        streams = (Stream("entries", kind="test_diary_entry"), Stream("moods", kind="mood"))

    errors = declaration_errors(Undeclared, sandbox_allowed=False)
    assert [e.id for e in errors] == [checks.E_STREAM_KIND]
    assert "'moods'" in errors[0].msg and "'mood'" in errors[0].msg


def test_a_kind_of_another_category_than_the_providers_collection():
    class Mixed(Complete):
        kinds = (DIARY, LEDGER)

    errors = declaration_errors(Mixed, sandbox_allowed=False)
    assert [e.id for e in errors] == [checks.E_KIND_CATEGORY]
    assert "test_ledger_line" in errors[0].msg


@pytest.mark.parametrize(
    "attribute",
    ["client_path", "processor_path", "webhook_handler_path", "webhook_receiver_path"],
)
def test_a_declared_path_that_does_not_import(attribute):
    broken = type("Broken", (Complete,), {attribute: "sources.providers.nowhere.Nothing"})
    errors = declaration_errors(broken, sandbox_allowed=False)
    assert [e.id for e in errors] == [checks.E_PATH]
    assert attribute in errors[0].msg


def test_a_periodic_function_that_does_not_import():
    class Late(Complete):
        periodic = (Periodic("test-late", "ingestion.schemas.no_such_function", 5),)

    errors = declaration_errors(Late, sandbox_allowed=False)
    assert [e.id for e in errors] == [checks.E_PERIODIC]
    assert "test-late" in errors[0].msg


def test_urls_and_sandbox_paths_name_the_same_endpoints():
    class Lopsided(Complete):
        urls: ClassVar[dict[str, str]] = {"api": "https://x", "token": "https://x/token"}
        sandbox_paths: ClassVar[dict[str, str]] = {"api": "/x", "userinfo": "/x/me"}

    errors = declaration_errors(Lopsided, sandbox_allowed=False)
    assert [e.id for e in errors] == [checks.E_URLS]
    assert "token, userinfo" in errors[0].msg


def test_development_needs_a_sandbox_module_beside_the_declaration():
    # The check looks for <package of the declaration>.sandbox: tests/sources/sandbox/ is a
    # package beside this module, and tests/ingestion has none.
    without = type("Without", (Complete,), {"__module__": "tests.ingestion.test_schemas"})
    errors = declaration_errors(without, sandbox_allowed=True)
    assert [e.id for e in errors] == [checks.E_SANDBOX]
    assert "tests.ingestion.sandbox" in errors[0].msg
    # Outside development the sandbox is never mounted, so none is needed.
    assert ids(without, sandbox_allowed=False) == []
    assert checks._sandbox_module(Complete) == "tests.sources.sandbox"
    assert ids(Complete, sandbox_allowed=True) == []


def test_two_providers_declaring_one_kind_name_differently():
    other_diary = Kind("test_diary_entry", "behavioral", {"words": FieldSpec(str)})

    class Other(Complete):
        id = "test_other"
        kinds = (other_diary,)
        streams = (Stream("entries", kind="test_diary_entry"),)

    class Same(Complete):
        id = "test_same"

    assert kind_conflicts([Complete, Same]) == []
    errors = kind_conflicts([Complete, Other])
    assert [e.id for e in errors] == [checks.E_DUPLICATE_KIND]
    assert "test_complete and test_other" in errors[0].msg


def test_a_provider_kind_named_like_another_registered_kind():
    # The events API owns "mood_rating"; a provider's different kind of that name would be lost.
    clash = Kind("mood_rating", "behavioral", {"words": FieldSpec(str)})

    class Clashing(Complete):
        id = "test_clashing"
        kinds = (clash,)
        streams = (Stream("entries", kind="mood_rating"),)

    errors = kind_conflicts([Clashing])
    assert [e.id for e in errors] == [checks.E_DUPLICATE_KIND]
    assert "'mood_rating'" in errors[0].msg


def test_the_registered_check_runs_over_the_registry(settings, monkeypatch):
    settings.SIBLING_SANDBOX_ALLOWED = False
    assert provider_declarations_check() == []
    # An incomplete provider in the registry stops `manage.py check`.
    from sources import providers

    class Incomplete(Complete):
        name = ""

    monkeypatch.setitem(providers.PROVIDERS, "test_complete", Incomplete)
    assert [e.id for e in provider_declarations_check()] == [checks.E_MISSING]
    with pytest.raises(SystemCheckError, match=r"sibling\.E010"):
        call_command("check")
