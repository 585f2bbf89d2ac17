"""The erasure fence: once a person's erasure has begun, nothing more of theirs is stored.

An erasure first writes its :class:`~ingestion.models.ErasureRecord` (not yet completed), named
by a keyed hash of the person's id, not the id itself; that record is the fence, and it outlives
the person's account. Every page a sync or an event batch stores checks it first
(:func:`person_fence_check`, one indexed read per page), and a person's data key is created only
through :func:`data_key_ensure`, which refuses a fenced person. So a sync running while its
person is erased stops at its next page, and no write can bring an erased person's key back.
"""

from __future__ import annotations

from typing import Any

from bson import Binary
from django.utils.crypto import salted_hmac

from ingestion.errors import PersonErased
from ingestion.models import ErasureRecord
from sibling.encryption import data_key_create

PERSON_ERASED = "this person's data is being erased; nothing more of theirs is stored"


def erasure_subject(user_id: Any) -> str:
    """The keyed hash that names a person in erasure records (never their id)."""
    return salted_hmac("sibling.erasure-subject", str(user_id), algorithm="sha256").hexdigest()


def person_fenced(user_id: Any) -> bool:
    """True once an erasure of this person has begun (completed or not)."""
    return ErasureRecord.objects.filter(subject=erasure_subject(user_id)).exists()


def person_fence_check(user_id: Any) -> None:
    """Raise PersonErased when the person is being or has been erased."""
    if user_id is not None and person_fenced(user_id):
        raise PersonErased(PERSON_ERASED)


def data_key_ensure(user_id: Any) -> Binary:
    """The person's data key, created when missing; refused (PersonErased) once their erasure
    has begun. Only the flows that may create a person's key call it: connecting an account and
    the person's own writes (events API, My data)."""
    person_fence_check(user_id)
    return data_key_create(user_id)
