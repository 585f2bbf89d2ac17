"""JSON log lines (python-json-logger): one valid JSON object a line, scrubbed of secrets, with
the sync context."""

import json
import logging
import secrets
from io import StringIO

import pytest

from sibling.logs import ContextFilter, JsonFormatter, ScrubbingFormatter, log_context

# A Google access token's shape, made fresh each run: no token-like value is kept in the tree.
TOKEN = "ya29." + secrets.token_urlsafe(24)


@pytest.fixture
def log():
    stream = StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    logger = logging.getLogger("tests.json")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logger.removeHandler(handler)


def test_a_line_is_valid_json_even_when_a_scrubbed_secret_sits_beside_a_quote(log):
    logger, lines = log
    # A quote right after the secret, and an escaped one inside it: scrubbing the JSON text
    # instead of the value would leave a bare quote and break the line.
    logger.info('refused: key=abc\\"def" and Bearer %s\nsecond line', TOKEN)
    (line,) = lines()
    assert line["level"] == "INFO" and line["logger"] == "tests.json"
    assert TOKEN not in line["message"] and "abc" not in line["message"]
    assert "key=[redacted]" in line["message"] and "Bearer [redacted]" in line["message"]
    assert line["message"].endswith("\nsecond line")
    assert line["time"].endswith("+00:00") and isinstance(line["process"], int)


def test_exceptions_and_extra_fields_are_scrubbed_too(log):
    logger, lines = log
    try:
        raise RuntimeError(f"token endpoint said access_token={TOKEN}")
    except RuntimeError:
        logger.exception("refresh failed", extra={"detail": {"url": f"/x?refresh_token={TOKEN}"}})
    (line,) = lines()
    assert "RuntimeError" in line["exception"]
    assert TOKEN not in json.dumps(line)


def test_the_sync_context_is_on_every_line_while_it_is_set_and_absent_otherwise(log):
    logger, lines = log
    with log_context(provider="example", connection="c1", run="r1"):
        logger.info("inside")
    logger.info("outside")
    inside, outside = lines()
    assert (inside["provider"], inside["connection"], inside["run"]) == ("example", "c1", "r1")
    assert not {"provider", "connection", "run"} & set(outside)


def test_the_plain_format_is_scrubbed_as_well():
    stream = StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(ScrubbingFormatter("%(message)s"))
    logger = logging.getLogger("tests.plain")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("Authorization: Bearer %s", TOKEN)
    finally:
        logger.removeHandler(handler)
    assert TOKEN not in stream.getvalue()


def test_the_settings_use_it():
    from django.conf import settings

    assert settings.LOGGING["formatters"]["json"] == {"()": "sibling.logs.JsonFormatter"}
