"""Finding a row by the id in a URL."""

from __future__ import annotations

from typing import Any, TypeVar

from bson import ObjectId
from bson.errors import InvalidId
from django.db.models import Model, QuerySet
from django.http import Http404

M = TypeVar("M", bound=Model)


def object_or_404(queryset: QuerySet[M], object_id: Any, *, what: str = "object") -> M:
    """The row with this ObjectId in queryset, or 404 for a missing or malformed id.

    Scope the queryset to its owner (``.filter(user=...)``): another person's id then looks
    exactly like a missing one.
    """
    try:
        pk = ObjectId(object_id)
    except (InvalidId, TypeError):
        raise Http404(f"No such {what}") from None
    found = queryset.filter(pk=pk).first()
    if found is None:
        raise Http404(f"No such {what}")
    return found
