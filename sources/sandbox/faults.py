"""Faults a test (or a developer) switches on per account to see how clients cope.

Python: `fault_set(provider, account, fault, count=1)` and
`fault_clear(provider, account, fault=None)`.
HTTP: `POST /sandbox/_faults` with JSON `{"provider", "account", "fault", "count"}` (set) or with
`"action": "clear"`; `GET /sandbox/_faults` lists what is pending.

`provider` is "google", "plaid" or "rescuetime"; `account` is the Google email, the Plaid item_id
or the RescueTime key. Two kinds of fault:

- applied at once, `count` ignored unless said: `expire_access_token` (Google: every current access
  token of the account expires now), `revoke` (Google: every grant and token of the account is
  revoked, refresh answers invalid_grant; Plaid: the item needs a new login, ITEM_LOGIN_REQUIRED,
  until update-mode Link or `fault_clear`; RescueTime: the key is unknown until `fault_clear`),
  `new_activity` (Google/Plaid: `count` steps of new mail or transactions, some changed, some
  removed; then, best effort, the provider's webhook: SYNC_UPDATES_AVAILABLE to a Plaid item's
  webhook URL, a Gmail push for a watched mailbox; see webhooks.py);
- consumed by the account's next `count` API calls: `rate_limit` (429), `server_error` (5xx),
  `malformed` (the next data page carries a few broken items), `plaid_mutation` (the next
  /transactions/sync call that continues a pagination loop fails with
  TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION).
"""

from __future__ import annotations

from collections.abc import Collection

from django.db import IntegrityError
from django.db.models import F
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from .common import json_body, json_response
from .models import ActivityTick, Fault, GoogleAccessToken, GoogleAccount, GoogleGrant, PlaidItem

PROVIDERS = ("google", "plaid", "rescuetime")
COUNTED_FAULTS = ("rate_limit", "server_error", "malformed", "plaid_mutation")
FAULTS_BY_PROVIDER: dict[str, frozenset[str]] = {
    "google": frozenset(
        {"expire_access_token", "revoke", "rate_limit", "server_error", "malformed", "new_activity"}
    ),
    "plaid": frozenset(
        {"revoke", "rate_limit", "server_error", "malformed", "plaid_mutation", "new_activity"}
    ),
    "rescuetime": frozenset({"revoke", "rate_limit", "server_error", "malformed"}),
}


class FaultError(ValueError):
    """An unknown provider or fault, or a fault the provider cannot have."""


def account_normalize(provider: str, account: str) -> str:
    account = (account or "").strip()
    return account.lower() if provider == "google" else account


def _validate(provider: str, account: str, fault: str | None) -> str:
    if provider not in PROVIDERS:
        raise FaultError(f"unknown provider {provider!r}; one of {', '.join(PROVIDERS)}")
    account = account_normalize(provider, account)
    if not account:
        raise FaultError("account is required")
    if fault is not None and fault not in FAULTS_BY_PROVIDER[provider]:
        allowed = ", ".join(sorted(FAULTS_BY_PROVIDER[provider]))
        raise FaultError(f"fault {fault!r} does not apply to {provider}; one of {allowed}")
    return account


def fault_set(provider: str, account: str, fault: str, count: int = 1) -> None:
    """Switch a fault on for one account (see the module docstring for what each one does)."""
    account = _validate(provider, account, fault)
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise FaultError("count must be a positive integer")
    now = timezone.now()
    if fault in COUNTED_FAULTS or (provider == "rescuetime" and fault == "revoke"):
        Fault.objects.update_or_create(
            provider=provider, account=account, fault=fault, defaults={"remaining": count}
        )
    elif fault == "expire_access_token":
        GoogleAccessToken.objects.filter(email=account, expires_at__gt=now).update(expires_at=now)
    elif fault == "revoke" and provider == "google":
        GoogleGrant.objects.filter(email=account).update(revoked=True)
        GoogleAccessToken.objects.filter(email=account).update(revoked=True)
    elif fault == "revoke" and provider == "plaid":
        PlaidItem.objects.filter(item_id=account).update(login_required=True)
    elif fault == "new_activity":
        if provider == "google":
            # The mailbox must exist before its first change, or the change would predate it.
            google_account_ensure(account)
        for _ in range(count):
            activity_tick_add(provider, account)
        # Imported here: the webhook senders build on the provider modules, which import this one.
        from .webhooks import activity_webhooks_send

        activity_webhooks_send(provider, account)


def fault_clear(provider: str, account: str, fault: str | None = None) -> None:
    """Drop pending faults of an account (all of them when `fault` is None).

    Also undoes what can be undone: a Plaid item's ITEM_LOGIN_REQUIRED and a revoked RescueTime
    key. Revoked Google grants stay revoked, as at Google: the person consents again.
    """
    account = _validate(provider, account, fault)
    pending = Fault.objects.filter(provider=provider, account=account)
    if fault is not None:
        pending = pending.filter(fault=fault)
    pending.delete()
    if provider == "plaid" and fault in (None, "revoke"):
        PlaidItem.objects.filter(item_id=account).update(login_required=False)


def faults_pending(provider: str, account: str) -> set[str]:
    """Names of the counted faults waiting for this account (one query, usually empty)."""
    account = account_normalize(provider, account)
    return set(
        Fault.objects.filter(provider=provider, account=account, remaining__gt=0).values_list(
            "fault", flat=True
        )
    )


def fault_take(
    provider: str, account: str, fault: str, pending: Collection[str] | None = None
) -> bool:
    """Consume one occurrence of a counted fault; True when the caller must now misbehave.

    The decrement is a conditional update, so two concurrent calls never both take the last one.
    """
    account = account_normalize(provider, account)
    if pending is not None and fault not in pending:
        return False
    taken = Fault.objects.filter(
        provider=provider, account=account, fault=fault, remaining__gt=0
    ).update(remaining=F("remaining") - 1)
    if taken:
        Fault.objects.filter(provider=provider, account=account, fault=fault, remaining=0).delete()
    return bool(taken)


def fault_active(provider: str, account: str, fault: str) -> bool:
    """Whether a standing fault (such as a revoked RescueTime key) is on, without consuming it."""
    account = account_normalize(provider, account)
    return Fault.objects.filter(
        provider=provider, account=account, fault=fault, remaining__gt=0
    ).exists()


def google_account_ensure(email: str) -> GoogleAccount:
    account, _ = GoogleAccount.objects.get_or_create(
        email=email.lower(), defaults={"created_at": timezone.now()}
    )
    return account


def activity_tick_add(provider: str, account: str) -> ActivityTick:
    """Append one activity step; a concurrent append makes us retry with the next number."""
    for _ in range(10):
        seq = ActivityTick.objects.filter(provider=provider, account=account).count()
        try:
            return ActivityTick.objects.create(
                provider=provider, account=account, seq=seq, at=timezone.now()
            )
        except IntegrityError:
            continue
    raise RuntimeError("could not record the activity step")


def activity_ticks(provider: str, account: str) -> list[ActivityTick]:
    return list(ActivityTick.objects.filter(provider=provider, account=account).order_by("seq"))


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
