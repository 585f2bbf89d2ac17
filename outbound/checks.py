"""Deployment check of the change notifications' guard against server-side request forgery."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Tags, Warning, register

SSRF_GUARD_OFF = (
    "SIBLING_SUBSCRIBER_ALLOW_HTTP is on with DEBUG off: change notifications may be sent over "
    "plain http and to private, loopback or link-local addresses (this host, the cloud's "
    "metadata service, internal services)."
)


@register(Tags.security, deploy=True)
def subscriber_http_check(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    if settings.DEBUG or not getattr(settings, "SIBLING_SUBSCRIBER_ALLOW_HTTP", False):
        return []
    return [
        Warning(
            SSRF_GUARD_OFF,
            hint="Unset SIBLING_SUBSCRIBER_ALLOW_HTTP in production; it is meant for development "
            "and tests.",
            id="outbound.W001",
        )
    ]
