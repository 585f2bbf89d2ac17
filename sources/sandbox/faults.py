"""Faults a test (or a developer) switches on per account to see how clients cope.

Python: `fault_set(provider, account, fault, count=1)` and
`fault_clear(provider, account, fault=None)`.
HTTP: `POST /sandbox/_faults` with JSON `{"provider", "account", "fault", "count"}` (set) or with
`"action": "clear"`; `GET /sandbox/_faults` lists what is pending.

`provider` is a registered provider id or a family ("google": every Google provider signs in
with the same Google account, so a provider id of the family means the family). `account` is
the account as that provider's imitation knows it (an email, an item id, an API key).

Shared faults, which every imitation honours: `rate_limit` (429), `server_error` (5xx) and
`malformed` (the next data page carries a few broken items) are consumed by the account's next
`count` calls; `revoke` ends the account's access (how depends on the imitation). An imitation
adds its own names (`fault_names` of its sandbox module, e.g. `new_activity`: `count` steps of
new, changed and removed data, then, best effort, the provider's webhook). A fault that a module
applies at once (its `fault_apply` answers True) is not stored; any other is stored with its
count and consumed by the imitation's calls (`fault_take`) or read as standing (`fault_active`).
"""

from __future__ import annotations

from collections.abc import Collection

from django.db.models import F
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from . import registry
from .common import json_body, json_response
from .models import Fault

SHARED_FAULTS = ("rate_limit", "server_error", "malformed", "revoke")
# Families whose accounts are email addresses, compared without case.
_CASELESS_FAMILIES = frozenset({"google"})


class FaultError(ValueError):
    """An unknown provider or fault, or a fault the provider cannot have."""


# More calls than any test or session makes; the database holds no integer past 2**63 - 1.
MAX_COUNT = 1_000_000


def _namespace(provider: str) -> str:
    try:
        return registry.namespace(provider)
    except (LookupError, TypeError):
        raise FaultError(
            f"unknown provider {provider!r}; one of {', '.join(registry.namespaces())}"
        ) from None


def account_normalize(provider: str, account: str) -> str:
    account = (account or "").strip()
    return account.lower() if provider in _CASELESS_FAMILIES else account


def fault_names(space: str) -> frozenset[str]:
    """The faults an account of this namespace can have."""
    names = set(SHARED_FAULTS)
    for module in registry.namespace_modules(space):
        names.update(getattr(module, "fault_names", ()))
    return frozenset(names)


def _validate(provider: str, account: str, fault: str | None) -> tuple[str, str]:
    space = _namespace(provider)
    account = account_normalize(space, account)
    if not account:
        raise FaultError("account is required")
    if fault is not None:
        allowed = fault_names(space)
        if fault not in allowed:
            raise FaultError(
                f"fault {fault!r} does not apply to {provider}; one of {', '.join(sorted(allowed))}"
            )
    return space, account


def fault_set(provider: str, account: str, fault: str, count: int = 1) -> None:
    """Switch a fault on for one account (see the module docstring for what each one does)."""
    space, account = _validate(provider, account, fault)
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_COUNT:
        raise FaultError(f"count must be a whole number from 1 to {MAX_COUNT}")
    for module in registry.namespace_modules(space):
        apply = getattr(module, "fault_apply", None)
        if apply is not None and apply(account, fault, count):
            return
    Fault.objects.update_or_create(
        provider=space, account=account, fault=fault, defaults={"remaining": count}
    )


def fault_clear(provider: str, account: str, fault: str | None = None) -> None:
    """Drop pending faults of an account (all of them when `fault` is None).

    Also undoes what the imitation can undo (its `fault_undo`), e.g. an item's need for a new
    login. Revoked Google grants stay revoked, as at Google: the person consents again.
    """
    space, account = _validate(provider, account, fault)
    pending = Fault.objects.filter(provider=space, account=account)
    if fault is not None:
        pending = pending.filter(fault=fault)
    pending.delete()
    for module in registry.namespace_modules(space):
        undo = getattr(module, "fault_undo", None)
        if undo is not None:
            undo(account, fault)


def _stored(provider: str, account: str) -> tuple[str, str]:
    try:
        space = registry.namespace(provider)
    except LookupError:
        space = provider
    return space, account_normalize(space, account)


def faults_pending(provider: str, account: str) -> set[str]:
    """Names of the stored faults waiting for this account (one query, usually empty)."""
    space, account = _stored(provider, account)
    return set(
        Fault.objects.filter(provider=space, account=account, remaining__gt=0).values_list(
            "fault", flat=True
        )
    )


def fault_take(
    provider: str, account: str, fault: str, pending: Collection[str] | None = None
) -> bool:
    """Consume one occurrence of a counted fault; True when the caller must now misbehave.

    The decrement is a conditional update, so two concurrent calls never both take the last one.
    """
    if pending is not None and fault not in pending:
        return False
    space, account = _stored(provider, account)
    taken = Fault.objects.filter(
        provider=space, account=account, fault=fault, remaining__gt=0
    ).update(remaining=F("remaining") - 1)
    if taken:
        Fault.objects.filter(provider=space, account=account, fault=fault, remaining=0).delete()
    return bool(taken)


def fault_active(provider: str, account: str, fault: str) -> bool:
    """Whether a standing fault (such as a revoked API key) is on, without consuming it."""
    space, account = _stored(provider, account)
    return Fault.objects.filter(
        provider=space, account=account, fault=fault, remaining__gt=0
    ).exists()


@csrf_exempt
@require_http_methods(["GET", "POST"])
def faults_api(request: HttpRequest) -> JsonResponse:
    """`GET` lists pending faults; `POST` sets (default) or clears (`"action": "clear"`) one."""
    if request.method == "GET":
        rows = Fault.objects.order_by("provider", "account", "fault")
        return json_response(
            {
                "faults": [
                    {
                        "provider": f.provider,
                        "account": f.account,
                        "fault": f.fault,
                        "remaining": f.remaining,
                    }
                    for f in rows
                ]
            }
        )
    body = json_body(request)
    if body is None:
        return json_response({"error": "body must be a JSON object"}, status=400)
    action = body.get("action", "set")
    provider = str(body.get("provider", ""))
    account = str(body.get("account", ""))
    fault = body.get("fault")
    try:
        if action == "set":
            count = body.get("count", 1)
            fault_set(provider, account, str(fault or ""), count)
        elif action == "clear":
            fault_clear(provider, account, str(fault) if fault else None)
        else:
            return json_response({"error": "action must be 'set' or 'clear'"}, status=400)
    except FaultError as err:
        return json_response({"error": str(err)}, status=400)
    return json_response({"ok": True, "action": action, "provider": provider, "fault": fault})
