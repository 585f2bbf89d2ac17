import logging

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from social_core.exceptions import SocialAuthBaseException
from social_django.middleware import SocialAuthExceptionMiddleware

from sources.pipeline import NOT_STORED, SCOPE_MISSING, missing_scopes_described
from sources.providers import PROVIDERS
from sources.providers.base import error_code_safe

logger = logging.getLogger(__name__)

# social-core's error codes (social_core.exceptions.REASONS) in the words people read.
MESSAGES = {
    "identity_in_use": "That account is already connected to another Sibling account.",
    "authorization_declined": "Connecting was cancelled; nothing was changed.",
    "state_mismatch": "The sign-in could not be verified. Please try again.",
    "session_context_missing": "The sign-in took too long or came from elsewhere. "
    "Please try again.",
    "authentication_disallowed": "Please log in to Sibling first, then connect the account.",
    "unavailable": "The provider could not be reached. Please try again in a moment.",
    SCOPE_MISSING: "Sibling needs every permission it asked for, and some were not given, so "
    "nothing was connected and the access given was withdrawn. Please connect again and leave "
    "every permission ticked.",
    NOT_STORED: "The account could not be saved, so nothing was connected and the access given "
    "was withdrawn. Please try again in a moment.",
}
FALLBACK = "The account could not be connected. Please try again."


class ConnectErrorMiddleware(SocialAuthExceptionMiddleware):
    """Failed connect flows end on the Connections page with a plain-language message."""

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, SocialAuthBaseException):
            return None
        backend = getattr(request, "backend", None)
        provider = PROVIDERS.get(getattr(backend, "name", ""))
        # Why, for operators: the class, social-core's code and stage, and the provider's own
        # error code and HTTP status. Never the exception's text or context, which may hold
        # what the provider sent back.
        logger.warning(
            "connect of %s failed: %s code=%s stage=%s provider_code=%s status=%s",
            provider.id if provider else "unknown provider",
            type(exception).__name__,
            error_code_safe(exception.code),
            exception.stage,
            error_code_safe(exception.provider_code) or "-",
            exception.status_code or "-",
        )
        prefix = f"{provider.name}: " if provider else ""
        text = prefix + MESSAGES.get(exception.code, FALLBACK)
        extra_tags = ""
        if exception.code == SCOPE_MISSING and provider is not None:
            missing = [m for m in exception.context.get("missing", ()) if isinstance(m, str)]
            if missing:
                words = "; ".join(missing_scopes_described(provider, missing))
                text += f" Missing: {words}."
            # The Connections page shows a Connect again button beside this message.
            extra_tags = f"connect-again {provider.id}"
        messages.error(request, text, extra_tags=extra_tags)
        return redirect("sources:connections")
