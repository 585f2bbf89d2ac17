"""social-auth pipeline steps for connecting (never logging in with) a Google account."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from social_core.exceptions import AuthPolicyError, AuthProviderError

from sources.providers import ProviderError, get_provider
from sources.services import connection_upsert, oauth_credentials_from


def require_signed_in_person(backend: Any, user: Any = None, **kwargs: Any) -> None:
    """Connecting adds an account to a signed-in person; it never signs anyone in or up."""
    if user is None or not user.is_authenticated:
        raise AuthPolicyError(backend, code="authentication_disallowed", stage="pipeline")


def connection_store(
    strategy: Any, backend: Any, user: Any, uid: str, response: dict, details: dict, **kwargs: Any
) -> dict[str, Any]:
    """Keep the tokens in the connection's encrypted credentials (and nowhere else)."""
    provider = get_provider(backend.name)
    credentials = oauth_credentials_from(response, uid=uid)
    try:
        external_account_id = provider.external_account_id(uid=uid, credentials=credentials)
    except ProviderError as err:
        raise AuthProviderError(backend, str(err), code="unavailable", stage="pipeline") from err
    connection = connection_upsert(
        user=user,
        provider=provider,
        external_account_id=external_account_id,
        credentials=credentials,
        account_label=details.get("email", ""),
        granted_scopes=response.get("scope", "").split(),
    )
    messages.success(strategy.request, f"{provider.name} is connected. The first sync has started.")
    return {"connection": connection}
