"""Deployment check of the email settings the alerts need."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Tags, Warning, register

# Backends that keep what they "send" where people's addresses do not belong.
LOCAL_BACKENDS = (
    "django.core.mail.backends.console.EmailBackend",
    "django.core.mail.backends.filebased.EmailBackend",
    "django.core.mail.backends.locmem.EmailBackend",
    "django.core.mail.backends.dummy.EmailBackend",
)
EMAIL_NOT_SENT = (
    "EMAIL_BACKEND keeps emails on this machine with DEBUG off: people get no alert emails, and "
    "their addresses are written to the logs or files."
)


@register(Tags.security, deploy=True)
def email_backend_check(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    if settings.DEBUG or settings.EMAIL_BACKEND not in LOCAL_BACKENDS:
        return []
    return [
        Warning(
            EMAIL_NOT_SENT,
            hint="Set EMAIL_URL (smtp+tls://user:password@host:587) or EMAIL_HOST and its "
            "companions, and leave EMAIL_BACKEND unset.",
            id="alerts.W001",
        )
    ]
