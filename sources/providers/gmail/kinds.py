"""The record kinds only Gmail produces."""

from __future__ import annotations

from datetime import datetime

from ingestion.schemas import FieldSpec as S
from ingestion.schemas import Kind

# A message's metadata, never its body.
EMAIL_MESSAGE = Kind(
    "email_message",
    "external",
    {
        "message_id": S(str),
        "thread_id": S(str),
        "internal_date": S(datetime),
        "from": S(str),
        "to": S(list),
        "subject": S(str),
        "labels": S(list),
        "snippet": S(str),
        "size": S(int),
    },
)
