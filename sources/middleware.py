from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from social_core.exceptions import SocialAuthBaseException
from social_django.middleware import SocialAuthExceptionMiddleware

from sources.providers import PROVIDERS

# social-core's error codes (social_core.exceptions.REASONS) in the words people read.
MESSAGES = {
    "identity_in_use": "That account is already connected to another Sibling account.",
    "authorization_declined": "Connecting was cancelled; nothing was changed.",
    "state_mismatch": "The sign-in could not be verified. Please try again.",
    "session_context_missing": "The sign-in took too long or came from elsewhere. "
    "Please try again.",
    "authentication_disallowed": "Please log in to Sibling first, then connect the account.",
    "unavailable": "The provider could not be reached. Please try again in a moment.",
}
FALLBACK = "The account could not be connected. Please try again."


class ConnectErrorMiddleware(SocialAuthExceptionMiddleware):
    """Failed connect flows end on the Connections page with a plain-language message."""

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, SocialAuthBaseException):
            return None
        backend = getattr(request, "backend", None)
        provider = PROVIDERS.get(getattr(backend, "name", ""))
        prefix = f"{provider.name}: " if provider else ""
        messages.error(request, prefix + MESSAGES.get(exception.code, FALLBACK))
        return redirect("sources:connections")
