"""Times in the person's own time zone on every page they are signed in to."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from sibling.people import person_zone


class PersonTimeZoneMiddleware:
    """Activates the signed-in person's time zone (``Person.time_zone``) for the request.

    Templates then show datetimes in it, and forms read entered dates and times in it (Django
    converts with the current time zone), so the sleep form's times are the person's own. Anyone
    else, and requests authenticated later (API tokens), stay in UTC. It must come after
    ``AuthenticationMiddleware``. The zone is read on every request, not kept in the session:
    one indexed lookup, and a change made on one device shows at once on the others. It only
    reads: a person without a settings row yet is in UTC, and a request racing the person's
    erasure cannot bring a row back after their account is gone.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            timezone.activate(person_zone(user.pk))
        else:
            timezone.deactivate()
        try:
            return self.get_response(request)
        finally:
            # The thread serves other people next.
            timezone.deactivate()
