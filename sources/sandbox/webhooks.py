"""The sandbox as a webhook sender: the delivery every imitation shares, and the control API.

Each provider's imitation builds and signs its webhooks the way the real provider does (in its
sandbox module) and hands the bytes to `deliver`: a POST of the body bytes it signed, serialised
once, with a 5 s timeout, retried on a non-2xx (or no answer at all) after each delay of
`retry_delays` (default `RETRY_DELAYS`, kept short so tests stay fast; the real providers back
off for minutes to days). `duplicate=True` delivers the identical request a second time, as a
redelivery. A send returns every status seen, in order; 0 stands for an attempt that got no
HTTP answer (refused, unreachable, timed out).

`POST /sandbox/_webhooks` sends one webhook to this app's receiver for a provider
(SIBLING_PUBLIC_URL + /webhooks/<provider id>/): `{"provider": <id>, "action": <name>, ...}`,
dispatched to the provider's `webhook_controls` (its first action when `action` is left out).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import requests
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from . import registry
from .common import json_body, json_response

logger = logging.getLogger(__name__)

# Waits before each retry; the number of delays is the number of retries.
RETRY_DELAYS: tuple[float, ...] = (0.1, 0.2, 0.4)
DELIVERY_TIMEOUT_S = 5

WebhookControl = Callable[[dict, str], dict]


class WebhookInputError(ValueError):
    """A send that cannot be built: an unknown account, no URL, a malformed interval..."""


# --- Delivery -------------------------------------------------------------------------------------


def post_once(url: str, body: bytes, headers: Mapping[str, str]) -> int:
    """One POST; its status, or 0 when no HTTP answer came."""
    try:
        response = requests.post(
            url, data=body, headers=dict(headers), timeout=DELIVERY_TIMEOUT_S, allow_redirects=False
        )
    except requests.RequestException as err:
        logger.info("sandbox webhook to %s got no answer: %s", url, err)
        return 0
    return response.status_code


def deliver(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    duplicate: bool = False,
    retry_delays: Sequence[float] | None = None,
) -> list[int]:
    """POST `body` until a 2xx or the retries run out; twice over for a duplicate."""
    delays = RETRY_DELAYS if retry_delays is None else tuple(retry_delays)
    statuses: list[int] = []
    for _ in range(2 if duplicate else 1):
        for attempt in range(len(delays) + 1):
            if attempt:
                time.sleep(delays[attempt - 1])
            status = post_once(url, body, headers)
            statuses.append(status)
            if 200 <= status < 300:
                break
    return statuses


def default_receiver(provider_id: str) -> str | None:
    """This app's receiver for a provider, from SIBLING_PUBLIC_URL.

    Read at send time, so a test that points SIBLING_PUBLIC_URL at its live server is honoured.
    """
    base = str(getattr(settings, "SIBLING_PUBLIC_URL", "") or "").rstrip("/")
    return f"{base}/webhooks/{provider_id}/" if base else None


def json_bytes(body: Any, *, indent: int | None = None) -> bytes:
    separators = None if indent else (",", ":")
    return json.dumps(body, indent=indent, separators=separators).encode()


def activity_webhook_send(send: Callable[[], list[int] | None]) -> list[int]:
    """What a provider pushes after new activity, best effort: never raises.

    Off with settings.SIBLING_SANDBOX_SEND_WEBHOOKS; `send` returns the statuses, or None when
    there is nobody to tell (no webhook URL, no watch).
    """
    if not getattr(settings, "SIBLING_SANDBOX_SEND_WEBHOOKS", True):
        return []
    try:
        return send() or []
    except Exception:
        # A receiver that is down or a broken send must not fail the fault that caused it.
        logger.warning("sandbox webhook after new activity failed", exc_info=True)
    return []


# --- Input of the control actions -----------------------------------------------------------------


def flag(body: dict, name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise WebhookInputError(f"{name} must be true or false")
    return value


def text(body: dict, name: str, default: str | None = None) -> str:
    value = body.get(name, default)
    if not isinstance(value, str) or not value:
        raise WebhookInputError(f"{name} is required (a non-empty string)")
    return value


def _controls() -> dict[str, dict[str, WebhookControl]]:
    return {
        provider_id: dict(module.webhook_controls)
        for provider_id, module in registry.sandbox_modules().items()
        if getattr(module, "webhook_controls", None)
    }


@csrf_exempt
@require_POST
def webhooks_api(request: HttpRequest) -> HttpResponse:
    """Send one provider webhook to this app's receiver (SIBLING_PUBLIC_URL + /webhooks/<id>/).

    JSON body: `provider` (a provider id whose imitation sends webhooks), `action` (one of its
    `webhook_controls`; default the first) and the action's own fields, documented in its
    imitation. Answers `{"ok": true, "provider", "action", "url", "statuses": [...]}` with the
    receiver's statuses (0: no answer); 400 for bad input; 502 when the send itself broke.
    """
    body = json_body(request)
    if body is None:
        return json_response({"error": "body must be a JSON object"}, status=400)
    controls = _controls()
    provider = body.get("provider")
    if not isinstance(provider, str) or provider not in controls:
        return json_response(
            {"error": f"provider must be one of {', '.join(controls)}"}, status=400
        )
    actions = controls[provider]
    action = body.get("action", next(iter(actions)))
    if not isinstance(action, str) or action not in actions:
        return json_response({"error": f"action must be one of {', '.join(actions)}"}, status=400)
    url = default_receiver(provider)
    if url is None:
        return json_response({"error": "settings.SIBLING_PUBLIC_URL is not set"}, status=400)
    try:
        result = actions[action](body, url)
    except WebhookInputError as err:
        return json_response({"error": str(err)}, status=400)
    except Exception as err:
        logger.exception("sandbox webhook send failed")
        return json_response({"error": f"the send failed: {type(err).__name__}"}, status=502)
    return json_response({"ok": True, "provider": provider, "action": action, "url": url, **result})
