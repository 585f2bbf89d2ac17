from typing import Any

from django.conf import settings
from django.http import HttpRequest


def sandbox(request: HttpRequest) -> dict[str, Any]:
    return {"sandbox_allowed": settings.SIBLING_SANDBOX_ALLOWED}
