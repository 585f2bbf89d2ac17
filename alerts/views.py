"""The one-click "stop these emails" link: the signed value in the link is the only
authentication, so it works signed out, and a mail client's RFC 8058 one-click POST (which
carries no CSRF cookie) works too. Opening the link only asks; the button (or that POST) stops
the emails, so a mail scanner that follows links does not turn them off."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from alerts import services

LINK_INVALID = (
    "This link is not a valid Sibling link. It may have been cut short when it was copied: "
    "open it from the email again, or turn alert emails off in your settings."
)
LINK_UNKNOWN = "This link no longer works: the account it was sent to no longer exists."


@csrf_exempt
@never_cache
@require_http_methods(["GET", "POST"])
def emails_stop(request: HttpRequest, token: str) -> HttpResponse:
    try:
        person = services.emails_stop_person(token)
    except services.StopLinkInvalid:
        return _refused(request, LINK_INVALID, status=400)
    except services.StopLinkUnknown:
        return _refused(request, LINK_UNKNOWN, status=404)
    if request.method == "POST":
        services.emails_stop(person=person)
        return render(
            request, "alerts/emails_stopped.html", {"settings_url": services.settings_url()}
        )
    return render(
        request,
        "alerts/emails_stop.html",
        {"already_off": not person.alert_emails, "settings_url": services.settings_url()},
    )


def _refused(request: HttpRequest, message: str, *, status: int) -> HttpResponse:
    response = render(request, "alerts/emails_stop_refused.html", {"message": message})
    response.status_code = status
    return response
