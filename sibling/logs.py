"""Logging: sync context on every line, JSON in production, and secrets scrubbed.

The runner sets the context (provider, connection id, run id) once; every log line written while
it is set carries it, from any module. Lines are scrubbed of anything shaped like a token or key,
as a last guard: messages are written never to contain one.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from pythonjsonlogger import json as json_logger

_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "log_context", default=None
)
CONTEXT_FIELDS = ("provider", "connection", "run")
_SECRETS = re.compile(
    r"(?i)(bearer\s+|access_token=|refresh_token=|key=|secret=|password=)[^\s&\"']+"
    r"|(access|public|link)-(sandbox|production|development)-[0-9a-f-]{8,}"
    r"|ya29\.[0-9A-Za-z_-]{10,}"
)


@contextlib.contextmanager
def log_context(**values: object) -> Iterator[None]:
    token = _context.set({**(_context.get() or {}), **{k: str(v) for k, v in values.items()}})
    try:
        yield
    finally:
        _context.reset(token)


def scrub(text: str) -> str:
    return _SECRETS.sub(lambda m: (m.group(1) or "") + "[redacted]", text)


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        context = _context.get() or {}
        for name in CONTEXT_FIELDS:
            if not hasattr(record, name):
                setattr(record, name, context.get(name, "-"))
        return True


class ScrubbingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


class JsonFormatter(json_logger.JsonFormatter):
    """One JSON object a line (python-json-logger): time (UTC, milliseconds), level, logger,
    message, process, the sync context fields that are set, any ``extra`` fields, and the
    exception. Every string in it is scrubbed before it is serialized (scrubbing the JSON text
    could cut an escape sequence in two and break the line)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault(
            "rename_fields", {"levelname": "level", "name": "logger", "exc_info": "exception"}
        )
        super().__init__(["levelname", "name", "message", "process"], **kwargs)

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        log_data["time"] = datetime.fromtimestamp(record.created, UTC).isoformat(
            timespec="milliseconds"
        )
        super().add_fields(log_data, record, message_dict)
        for name in CONTEXT_FIELDS:
            if log_data.get(name) == "-":  # not set: left out, as the plain format cannot
                del log_data[name]

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        return _scrubbed(log_data)


def _scrubbed(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {key: _scrubbed(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_scrubbed(item) for item in value]
    return value
