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
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import quote_plus

import requests
from django.conf import settings
from django.utils.module_loading import import_string

HTTP_TIMEOUT_S = 15


class ProviderError(Exception):
    """A provider call failed. The message is safe to show and never holds a secret."""


class ProviderAuthError(ProviderError):
    """The provider refused the credentials: the person must connect again."""


class RevocationError(ProviderError):
    """The provider did not confirm a revocation.

    ``code`` says why in a form safe for logs and staff pages: the provider's error code or HTTP
    status (``"503"``, ``"400 invalid_client"``, ``"INTERNAL_SERVER_ERROR"``) or the class of
    the network error (``"ConnectTimeout"``). Never a token.
    """

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


_SAFE_CODE = re.compile(r"[^A-Za-z0-9_.\- ]")


def error_code_safe(value: object) -> str:
    """A provider's error code, cut to what can be logged: it is the provider's text."""
    return _SAFE_CODE.sub("", str(value or ""))[:60]


@dataclass(frozen=True)
class RevocationToken:
    """The token that withdraws a grant, and its RFC 7009 ``token_type_hint``."""

    value: str = field(repr=False)  # a secret: never in a repr, a log or an exception
    hint: str  # "refresh_token" or "access_token"


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
    def revocation_token(cls, credentials: dict[str, Any]) -> RevocationToken | None:
        """The token whose revocation withdraws Sibling's access; None when there is none."""
        return None

    @classmethod
    def revoke_token(cls, token: RevocationToken) -> None:
        """Revoke one token at the provider.

        Returns only when the provider confirmed it the way its documentation says, or said the
        token was already invalid (nothing left to withdraw). Anything else raises
        RevocationError: another refusal, a 5xx, a network error or a timeout.
        """

    @classmethod
    def revoke(cls, credentials: dict[str, Any]) -> None:
        """Withdraw Sibling's access at the provider. Raises RevocationError when not confirmed."""
        token = cls.revocation_token(credentials)
        if token is not None:
            cls.revoke_token(token)

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

    # How the client authenticates at the revocation endpoint (RFC 7009 section 2.1, with the
    # methods of RFC 6749 section 2.3.1): "client_secret_basic" (HTTP Basic, which every
    # RFC 7009 server supports), "client_secret_post" (id and secret in the form), or "none"
    # (the token alone, as at Google).
    revocation_client_auth: ClassVar[str] = "client_secret_basic"
    # RFC 7009 lets the client say which kind of token it sends; some servers take the token
    # alone and nothing else.
    revocation_sends_hint: ClassVar[bool] = True
    # (HTTP status, error code) answers the provider documents as "this token is already
    # invalid", which leave nothing to withdraw. RFC 7009 answers 200 for those, so none here.
    revocation_already_revoked: ClassVar[frozenset[tuple[int, str]]] = frozenset()

    @classmethod
    def external_account_id(cls, *, uid: str, credentials: dict[str, Any]) -> str:
        """The provider's id for the account; the social uid unless the provider has its own."""
        return uid

    @classmethod
    def revocation_token(cls, credentials: dict[str, Any]) -> RevocationToken | None:
        # Revoking the refresh token ends the whole grant (RFC 7009 section 2.1), so it is
        # preferred; the access token is all there is without offline access.
        if credentials.get("refresh_token"):
            return RevocationToken(credentials["refresh_token"], "refresh_token")
        if credentials.get("access_token"):
            return RevocationToken(credentials["access_token"], "access_token")
        return None

    @classmethod
    def revoke_token(cls, token: RevocationToken) -> None:
        """RFC 7009 revocation: POST the form-encoded token with the client's authentication.

        Only 200 means revoked (RFC 7009 section 2.2 answers 200 for an already invalid token
        too), apart from the answers a provider lists in ``revocation_already_revoked``. A
        provider whose revocation is another call (Strava: ``POST /oauth/deauthorize`` with the
        access token) overrides this method alone.
        """
        data = {"token": token.value}
        if cls.revocation_sends_hint:
            data["token_type_hint"] = token.hint
        auth = None
        if cls.revocation_client_auth != "none":
            client = cls.client_credentials()
            if cls.revocation_client_auth == "client_secret_post":
                data.update(client_id=client["client_id"], client_secret=client["client_secret"])
            else:
                # RFC 6749 section 2.3.1: both are form-encoded before they become Basic's
                # user and password.
                auth = (quote_plus(client["client_id"]), quote_plus(client["client_secret"]))
        try:
            response = requests.post(
                cls.url("revoke"), data=data, auth=auth, timeout=HTTP_TIMEOUT_S
            )
        except requests.RequestException as err:
            raise RevocationError(
                f"{cls.name} could not be reached to withdraw Sibling's access",
                code=type(err).__name__,
            ) from None  # the request in the cause would carry the token
        if response.status_code == 200:
            return
        error = oauth_error_code(response)
        if (response.status_code, error) in cls.revocation_already_revoked:
            return
        raise RevocationError(
            f"{cls.name} did not confirm that Sibling's access was withdrawn",
            code=f"{response.status_code} {error}".strip(),
        )


def oauth_error_code(response: requests.Response) -> str:
    """The ``error`` of an OAuth 2.0 error answer (RFC 6749 section 5.2), or ""."""
    try:
        body = response.json()
    except ValueError:
        return ""
    return error_code_safe(body.get("error")) if isinstance(body, dict) else ""


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

    @classmethod
    def revocation_token(cls, credentials: dict[str, Any]) -> RevocationToken | None:
        # The Item's access token is the whole grant: removing the Item ends it.
        if credentials.get("access_token"):
            return RevocationToken(credentials["access_token"], "access_token")
        return None
