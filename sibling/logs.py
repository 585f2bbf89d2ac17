"""Logging: sync context on every line, JSON in production, and secrets scrubbed.

The runner sets the context (provider, connection id, run id) once; every log line written while
it is set carries it, from any module. Lines are scrubbed of anything shaped like a token or key,
as a last guard: messages are written never to contain one.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime

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


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": scrub(record.getMessage()),
            "process": record.process,
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, "-")
            if value != "-":
                line[name] = value
        if record.exc_info:
            line["exception"] = scrub(self.formatException(record.exc_info))
        return json.dumps(line)
