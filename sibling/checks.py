"""Deployment checks of the project's own settings (run by ``manage.py check --deploy``).

Django's deploy checks cover its own security settings; these cover what only this project knows
is wrong in production.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, register

PUBLIC_URL_MISSING = (
    "SIBLING_PUBLIC_URL is not set. With DEBUG off it is required: it is where providers reach "
    "Sibling (webhook URLs sent to providers, push audiences, subscriber endpoints)."
)
PUBLIC_URL_NOT_HTTPS = "SIBLING_PUBLIC_URL must be an https:// URL with a host when DEBUG is off."


@register(Tags.security, deploy=True)
def public_url_check(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """With DEBUG off, SIBLING_PUBLIC_URL is set and is an https URL with a host.

    Development (DEBUG on) falls back to the local server's address, which providers cannot reach;
    a production process that did the same would register unreachable webhooks and accept no
    pushes, silently.
    """
    if settings.DEBUG:
        return []
    url = str(getattr(settings, "SIBLING_PUBLIC_URL", "") or "")
    if not url:
        return [
            Error(
                PUBLIC_URL_MISSING,
                hint="Set SIBLING_PUBLIC_URL=https://<public host> in the environment.",
                id="sibling.E001",
            )
        ]
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:  # an unbalanced IPv6 bracket, say
        parts, host = None, None
    if parts is None or parts.scheme != "https" or not host:
        return [
            Error(
                PUBLIC_URL_NOT_HTTPS,
                hint="Providers only deliver webhooks to https endpoints.",
                id="sibling.E002",
            )
        ]
    return []
