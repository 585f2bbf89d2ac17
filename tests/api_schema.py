"""Schemathesis against the published OpenAPI schema, through the project's own WSGI app."""

from __future__ import annotations

from typing import Any

import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance


def schema_statuses(
    *, secret: str, mode: GenerationMode, max_examples: int, **include: Any
) -> set[int]:
    """Send generated requests (valid or invalid, per ``mode``) to the operations ``include``
    selects (schemathesis' ``include`` filters), as the holder of ``secret``; each answer must
    be no 5xx and as documented. Returns the statuses seen."""
    schema = schemathesis.openapi.from_wsgi(
        "/api/schema/?format=json", get_wsgi_application()
    ).include(**include)
    seen: set[int] = set()

    @given(case=schema.as_strategy(generation_mode=mode))
    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,  # no .hypothesis directory in the project
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        response = case.call_and_validate(
            headers={"Authorization": f"Bearer {secret}"},
            checks=[not_a_server_error, response_schema_conformance],
        )
        seen.add(response.status_code)

    check()
    return seen
