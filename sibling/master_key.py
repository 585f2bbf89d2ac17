"""Where the local master key comes from.

The master key wraps every person's data key. It comes from ``SIBLING_MASTER_KEY`` (base64 of 96
bytes). In development only, when that is unset, one is generated once into ``var/master.key``
(mode 0600) with a warning; without DEBUG the process refuses to start without a configured key.
A cloud KMS replaces all of this: see ``SIBLING_KMS_PROVIDER`` in the README.

This module is imported by the settings, so it uses the standard library only.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import secrets
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

logger = logging.getLogger(__name__)

MASTER_KEY_BYTES = 96
MASTER_KEY_ENV = "SIBLING_MASTER_KEY"


def master_key_generate() -> str:
    """A new local master key, base64-encoded, as ``SIBLING_MASTER_KEY`` expects it."""
    return base64.b64encode(secrets.token_bytes(MASTER_KEY_BYTES)).decode("ascii")


def master_key_decode(encoded: str, *, source: str) -> bytes:
    try:
        key = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError) as err:
        raise ImproperlyConfigured(f"{source} is not valid base64") from err
    if len(key) != MASTER_KEY_BYTES:
        raise ImproperlyConfigured(
            f"{source} must decode to {MASTER_KEY_BYTES} bytes, not {len(key)}"
        )
    return key


def master_key_load(*, configured: str, debug: bool, key_file: Path) -> bytes:
    """The local master key: configured, or (development only) read or created in key_file."""
    if configured:
        return master_key_decode(configured, source=MASTER_KEY_ENV)
    if not debug:
        raise ImproperlyConfigured(
            f"{MASTER_KEY_ENV} is required when DEBUG is off "
            "(or set SIBLING_KMS_PROVIDER to a cloud KMS)"
        )
    key_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return master_key_decode(key_file.read_text(), source=str(key_file))
    with os.fdopen(fd, "w") as out:
        out.write(master_key_generate() + "\n")
    logger.warning(
        "%s is not set: generated a development master key in %s. "
        "Losing that file makes every encrypted value unreadable; never use it in production.",
        MASTER_KEY_ENV,
        key_file,
    )
    return master_key_decode(key_file.read_text(), source=str(key_file))
