"""social-auth pipeline steps for connecting (never logging in with) an OAuth2 provider's account.

A step that refuses raises a social-auth exception with a code of its own; the backend then
revokes the tokens it already obtained (sources.providers.oauth2) and ConnectErrorMiddleware
logs the refusal and tells the person in plain words.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.db import DatabaseError
from pymongo.errors import PyMongoError
from social_core.exceptions import AuthException, AuthPolicyError, AuthProviderError

from ingestion.errors import PersonErased
from sources.providers import OAuth2Provider, Provider, ProviderError, get_provider
from sources.services import connection_upsert, oauth_credentials_from

# Codes of this app's own refusals (social-core's are in social_core.exceptions.REASONS).
SCOPE_MISSING = "scope_missing"
NOT_STORED = "connection_not_stored"
# A label is for the Connections page: a name or an address, never a page of text.
ACCOUNT_LABEL_MAX_LENGTH = 200


def account_label_from(provider: type[Provider], details: dict[str, Any]) -> str:
    """How the Connections page names the account, from the backend's ``get_user_details``:
    its email, else its username, else the person's full name there, else "<provider> account".
    """

    def text(key: str) -> str:
        value = details.get(key)
        return value.strip() if isinstance(value, str) else ""

    full_name = text("fullname") or " ".join(filter(None, (text("first_name"), text("last_name"))))
    label = text("email") or text("username") or full_name
    return label[:ACCOUNT_LABEL_MAX_LENGTH] or f"{provider.name} account"


def scopes_granted(provider: type[OAuth2Provider], response: dict[str, Any]) -> list[str]:
    """The scopes the token response says were granted (only those the person left ticked),
    each as the provider writes it."""
    value = response.get("scope")
    words = value.split() if isinstance(value, str) else []
    return [provider.scope_expand(scope) for scope in words]


def missing_scopes_described(provider: type[OAuth2Provider], missing: list[str]) -> list[str]:
    """The missing scopes in the words the provider declares for them (`scope_descriptions`),
    else the scope itself."""
    return [provider.scope_descriptions.get(scope, scope) for scope in missing]


# The connect form's history window, which social-auth keeps in the session from the begin
# step to this one (settings.SOCIAL_AUTH_FIELDS_STORED_IN_SESSION).
BACKFILL_FIELD = "backfill_days"


def backfill_days_chosen(strategy: Any, provider: type[Provider]) -> int | None:
    """The history window the person chose on the connect form (None: the default). A value
    the provider does not offer (a forged form) falls back to the default, and the person is
    told: the account is connected by now, and refusing it would gain nothing."""
    value = strategy.session_get(BACKFILL_FIELD)
    if value in (None, ""):
        return None
    try:
        days = int(value)
    except (TypeError, ValueError):
        days = -1
    if provider.backfill_days_valid(days):
        return days
    messages.warning(
        strategy.request,
        f"That history window is not one {provider.name} offers, so Sibling fetches the "
        f"usual {provider.backfill_days_default()} days.",
    )
    return None


def require_signed_in_person(backend: Any, user: Any = None, **kwargs: Any) -> None:
    """Connecting adds an account to a signed-in person; it never signs anyone in or up."""
    if user is None or not user.is_authenticated:
        raise AuthPolicyError(backend, code="authentication_disallowed", stage="pipeline")


def connection_store(
    strategy: Any, backend: Any, user: Any, uid: str, response: dict, details: dict, **kwargs: Any
) -> dict[str, Any]:
    """Keep the tokens in the connection's encrypted credentials (and nowhere else).

    A refused connect also takes back the account link ``associate_user`` made for it just
    before, so nothing connected leaves the account claimed (another Sibling account would be
    told it is in use); a link that was already there belongs to a connection and stays, and so
    does that connection's grant (the refusal says ``grant_in_use``).
    """
    try:
        return _connection_store(strategy, backend, user, uid, response, details)
    except AuthException as err:
        if kwargs.get("social") is not None:
            if kwargs.get("new_association"):
                kwargs["social"].delete()
            else:
                # A reconnect of an account this person has connected: Google keeps one grant
                # per account and client, so revoking this attempt's tokens would end the
                # working connection's grant too. The backend leaves it alone.
                err.grant_in_use = True  # type: ignore[attr-defined]
        raise


def _connection_store(
    strategy: Any, backend: Any, user: Any, uid: str, response: dict, details: dict
) -> dict[str, Any]:
    provider = get_provider(backend.name)
    granted_scopes = scopes_granted(provider, response)
    # Google's consent screen lets the person untick scopes; without every one the provider
    # declares, syncs would fail later, so the connect is refused now (and the grant revoked).
    wanted = {provider.scope_expand(scope) for scope in provider.scopes}
    if missing := sorted(wanted - set(granted_scopes)):
        raise AuthPolicyError(
            backend, code=SCOPE_MISSING, stage="pipeline", context={"missing": missing}
        )
    credentials = oauth_credentials_from(response, uid=uid)
    try:
        external_account_id = provider.external_account_id(uid=uid, credentials=credentials)
    except ProviderError as err:
        raise AuthProviderError(backend, code="unavailable", stage="pipeline") from err
    try:
        connection = connection_upsert(
            user=user,
            provider=provider,
            external_account_id=external_account_id,
            credentials=credentials,
            account_label=account_label_from(provider, details),
            granted_scopes=granted_scopes,
            backfill_days=backfill_days_chosen(strategy, provider),
        )
    # PersonErased: an erasure of this person has begun, and nothing more of theirs is stored.
    except (DatabaseError, PyMongoError, PersonErased) as err:
        raise AuthException(backend, code=NOT_STORED, source="storage", stage="pipeline") from err
    messages.success(strategy.request, f"{provider.name} is connected. The first sync has started.")
    return {"connection": connection}
