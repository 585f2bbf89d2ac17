"""Standard Webhooks signing (https://www.standardwebhooks.com/): what a subscriber receives.

Each delivery is a POST of ``{"type", "timestamp", "data"}`` as JSON with the headers
``webhook-id`` (the event id, the same on every retry and replay: receivers deduplicate by it),
``webhook-timestamp`` (seconds since the epoch, the time of this attempt) and
``webhook-signature`` (``v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">``, keyed with the
subscriber's secret; for a day after a rotation, a second signature with the previous secret,
space-separated), made by the ``standardwebhooks`` library.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from standardwebhooks import Webhook

SECRET_PREFIX = "whsec_"  # noqa: S105 (the format's prefix)
SECRET_BYTES = 32


def secret_generate() -> str:
    """A new subscriber secret: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def event_id_new() -> str:
    """A unique event id, ``msg_`` + 26 random base32 characters (130 bits)."""
    return "msg_" + base64.b32encode(secrets.token_bytes(17)).decode().rstrip("=").lower()[:26]


def timestamp_text(moment: datetime) -> str:
    """RFC 3339 in UTC with milliseconds, as the body's ``timestamp``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_body(*, event_type: str, created_at: datetime, data: dict[str, Any]) -> str:
    """The JSON body of an event, serialised once: the signature covers these exact bytes."""
    return json.dumps(
        {"type": event_type, "timestamp": timestamp_text(created_at), "data": data},
        separators=(",", ":"),
        sort_keys=True,
    )


def headers_sign(
    *, secret: str, event_id: str, body: str, at: datetime, also: Sequence[str] = ()
) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt made at ``at``: signed with ``secret``,
    and with each of ``also`` (a rotated-away secret still honoured), space-separated, so a
    receiver holding either verifies it."""
    moment = at.astimezone(UTC)
    signatures = [Webhook(key).sign(event_id, moment, body) for key in (secret, *also)]
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": " ".join(signatures),
    }
