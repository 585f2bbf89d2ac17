"""What a provider is, and the behaviour each auth mode shares.

A provider package declares constants (id, name, category, auth mode, scopes, streams, endpoint
URLs) on a subclass of one auth-mode base class; everything an auth mode does the same way for
every provider lives once in that base class.

Endpoint URLs: every named endpoint has the real provider's URL as default. Settings override it
(``<PROVIDER>_<NAME>_URL``), and in development a provider without real credentials talks to the
built-in sandbox, whose paths each provider declares beside the real URLs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, ClassVar

import requests
from django.conf import settings
from django.utils.module_loading import import_string

HTTP_TIMEOUT_S = 15


class ProviderError(Exception):
    """A provider call failed. The message is safe to show and never holds a secret."""


class ProviderAuthError(ProviderError):
    """The provider refused the credentials: the person must connect again."""


@dataclass(frozen=True)
class Stream:
    """One kind of record a provider yields: its primary key and the cursor it resumes from."""

    name: str
    primary_key: str
    cursor_field: str
    kind: str


class Provider:
    do_not_call_in_templates = True  # templates read the class's constants

    id: ClassVar[str]
    name: ClassVar[str]
    category: ClassVar[str]  # "external" or "behavioral"
    auth_mode: ClassVar[str]  # "oauth2", "api_key" or "plaid_link"
    scopes: ClassVar[tuple[str, ...]] = ()
    streams: ClassVar[tuple[Stream, ...]] = ()
    urls: ClassVar[dict[str, str]] = {}
    sandbox_paths: ClassVar[dict[str, str]] = {}
    # Keys of the stored credentials that are secrets (never shown, logged or exported).
    secret_fields: ClassVar[tuple[str, ...]] = ()
    default_sync_interval_s: ClassVar[int] = 3600
    reauth_message: ClassVar[str] = "Please connect this account again."
    # The provider's sync client (an ingestion.clients.SyncClient) and its processor, a pure
    # function (stream name, raw page) -> ingestion.schemas.ProcessedPage.
    client_path: ClassVar[str] = ""
    processor_path: ClassVar[str] = ""
    # The function that processes this provider's stored webhook events (ingestion.webhooks).
    webhook_handler_path: ClassVar[str] = ""

    @classmethod
    def sync_client_class(cls) -> Any:
        return import_string(cls.client_path)

    @classmethod
    def processor(cls) -> Any:
        return import_string(cls.processor_path)

    @classmethod
    def config(cls) -> dict[str, Any]:
        return settings.SIBLING_PROVIDERS[cls.id]

    @classmethod
    def sandboxed(cls) -> bool:
        return bool(settings.SIBLING_SANDBOX_ALLOWED and cls.config()["sandbox"])

    @classmethod
    def client_credentials(cls) -> dict[str, str]:
        return cls.config()["credentials"]

    @classmethod
    def url(cls, name: str) -> str:
        """The endpoint URL: an explicit setting, else the sandbox's when sandboxed, else real."""
        override = cls.config()["urls"].get(name)
        if override:
            return override
        if cls.sandboxed():
            return settings.SIBLING_SANDBOX_BASE_URL + cls.sandbox_paths[name]
        return cls.urls[name]

    @classmethod
    def revoke(cls, credentials: dict[str, Any]) -> None:
        """Withdraw Sibling's access at the provider. Raises ProviderError when it could not."""

    @classmethod
    def credentials_redacted(cls, credentials: dict[str, Any] | None) -> dict[str, Any]:
        if not credentials:
            return {}
        return {k: ("[secret]" if k in cls.secret_fields else v) for k, v in credentials.items()}


class OAuth2Provider(Provider):
    """Authorization-code grant through a social-auth backend named after the provider.

    The backend (``backend`` in the provider package) takes its endpoints and client credentials
    from here. Tokens land in the connection's encrypted credentials, never in social_django's
    ``extra_data`` (see sources.pipeline).
    """

    auth_mode = "oauth2"
    secret_fields = ("access_token", "refresh_token")
    backend_path: ClassVar[str]
    # Google sends a refresh token only for offline access granted on a consent screen.
    auth_extra_arguments: ClassVar[dict[str, str]] = {}

    @classmethod
    def external_account_id(cls, *, uid: str, credentials: dict[str, Any]) -> str:
        """The provider's id for the account; the social uid unless the provider has its own."""
        return uid

    @classmethod
    def revoke(cls, credentials: dict[str, Any]) -> None:
        # Revoking the refresh token revokes the whole grant (RFC 7009; Google does so).
        token = credentials.get("refresh_token") or credentials.get("access_token")
        if not token:
            return
        try:
            response = requests.post(
                cls.url("revoke"), data={"token": token}, timeout=HTTP_TIMEOUT_S
            )
        except requests.RequestException as err:
            raise ProviderError(f"{cls.name} could not be reached to revoke access") from err
        # An already revoked or expired token leaves nothing to withdraw.
        if response.status_code >= 500:
            raise ProviderError(f"{cls.name} did not confirm the revocation")


class ApiKeyProvider(Provider):
    """A personal API key the person pastes in, checked against the API before it is saved."""

    auth_mode = "api_key"
    secret_fields = ("api_key",)
    key_help: ClassVar[str] = ""

    @classmethod
    def key_check(cls, api_key: str) -> None:
        """Raise ProviderAuthError when the provider does not accept the key."""
        raise NotImplementedError

    @classmethod
    def external_account_id_for_key(cls, api_key: str) -> str:
        # The key itself is a secret; a digest tells two keys apart without revealing either.
        return hashlib.sha256(api_key.encode()).hexdigest()[:24]


class PlaidLinkProvider(Provider):
    """Plaid Link: a link token for the page, a public token back, exchanged for an access token."""

    auth_mode = "plaid_link"
    secret_fields = ("access_token",)
