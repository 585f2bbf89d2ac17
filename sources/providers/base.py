"""What a provider is, and the behaviour each auth mode shares.

A provider package declares constants (id, name, category, auth mode, scopes, streams, the kinds
it produces, endpoint URLs, client credentials, settings, webhook receiver, periodic work) on a
subclass of one auth-mode base class; everything an auth mode does the same way for every
provider lives once in that base class. The registry (``sources.providers.REGISTRY``) lists the
declarations, and every piece of wiring (settings, auth backends, routes, kinds, schedules) is
built from them; ``sources.checks`` refuses to start with an incomplete one.

A declaration module (``provider.py``) is imported while Django's settings load: it imports no
model and reads ``django.conf.settings`` only inside methods.

Endpoint URLs: every named endpoint has the real provider's URL as default. Settings override it
(``<PROVIDER>_<NAME>_URL``), and in development a provider without real credentials talks to the
built-in sandbox, whose paths each provider declares beside the real URLs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote_plus

import requests
from django.conf import settings
from django.utils.module_loading import import_string

# The error classes live in ingestion.errors (one hierarchy for connect-time calls and syncs);
# importing them here keeps them importable from this module and from sources.providers.
from ingestion.errors import (  # noqa: F401  (re-exported)
    ProviderAuthError,
    ProviderError,
    ReauthRequired,
    RevocationError,
    error_code_safe,
)
from ingestion.http import CallCounter, ProviderHttp, RetryPolicy
from sources.providers.oauth2 import ProviderOAuth2

if TYPE_CHECKING:
    from ingestion.schemas import Kind

# What a declaration may say; sources.checks refuses anything else.
CATEGORIES = ("external", "behavioral")
AUTH_MODES = ("oauth2", "api_key", "hosted_link")

# How far back a first sync may reach, in days, offered to every person (each provider adds its
# own maximum, see Provider.max_backfill_days). A connection's ``backfill_days`` of
# BACKFILL_EVERYTHING asks for all the history a provider keeps.
BACKFILL_CHOICES_DAYS = (30, 90, 365)
BACKFILL_EVERYTHING = 0
# Where "everything" starts for a client that needs a date (no provider holds data before it).
EVERYTHING_SINCE = datetime(1970, 1, 1, tzinfo=UTC)
MINUTE, HOUR, DAY = 60, 3600, 86400


@dataclass(frozen=True)
class RevocationToken:
    """The token that withdraws a grant, and its RFC 7009 ``token_type_hint``."""

    value: str = field(repr=False)  # a secret: never in a repr, a log or an exception
    hint: str  # "refresh_token" or "access_token"


@dataclass(frozen=True)
class Stream:
    """One sequence of records a provider's sync client pages through, and their kind (one of
    the provider's ``kinds``)."""

    name: str
    kind: str


@dataclass(frozen=True)
class Setting:
    """A setting the provider reads, besides its client credentials and endpoint URLs.

    Read from the environment variable ``<ID>_<NAME>`` and published as the Django setting of
    the same name (``Setting("push_topic")`` of provider ``x`` is ``settings.X_PUSH_TOPIC``).
    ``sandbox_default`` replaces ``default`` while the provider talks to the sandbox. ``cast``
    turns the variable's text into the value (``bool`` reads 1/0, true/false, yes/no).
    """

    name: str
    default: Any = ""
    sandbox_default: Any = None
    cast: Callable[[str], Any] = str


@dataclass(frozen=True)
class Budget:
    """One of the provider's quotas, which every sync spends through ``ingestion.budgets``.

    ``per``: "account" (one bucket per connected account: a mailbox, a bank link) or
    "app" (one bucket for Sibling's client at the provider, shared by every person). At most
    ``limit`` units in any ``window_s`` seconds; a call of operation ``op`` costs
    ``costs.get(op, default_cost)`` units each. ``operations`` names the only operations the
    budget counts (None: every call). ``aligned`` windows reset at clock-aligned boundaries
    (multiples of ``window_s`` since the epoch, UTC: :00/:15/:30/:45, midnight), as the
    provider counts them; otherwise the provider is taken to count over a sliding window.

    The declared values are the provider's documented defaults; ``<ID>_BUDGET_<NAME>``
    overrides the limit (a quota raised for Sibling's project, a benchmark).
    """

    name: str
    limit: int
    window_s: int
    per: str = "account"
    costs: dict[str, int] = field(default_factory=dict)
    default_cost: int = 1
    operations: frozenset[str] | None = None
    aligned: bool = False

    def cost(self, operation: str, count: int = 1) -> int:
        """Units that ``count`` calls of ``operation`` take from this budget (0: not counted)."""
        if self.operations is not None and operation not in self.operations:
            return 0
        return self.costs.get(operation, self.default_cost) * max(0, count)


@dataclass(frozen=True)
class Periodic:
    """Work the provider needs on a schedule: ``func`` (dotted path) every ``minutes``,
    scheduled after migrate under ``name`` (unique across providers: prefix it with the id)."""

    name: str
    func: str
    minutes: int


class Provider:
    do_not_call_in_templates = True  # templates read the class's constants

    id: ClassVar[str]
    name: ClassVar[str]
    category: ClassVar[str]  # "external" or "behavioral"
    auth_mode: ClassVar[str]  # "oauth2", "api_key" or "hosted_link"
    scopes: ClassVar[tuple[str, ...]] = ()
    streams: ClassVar[tuple[Stream, ...]] = ()
    # The record kinds (ingestion.schemas.Kind) this provider produces: its own from
    # <package>/kinds.py, shared ones from sources/providers/kinds.py. ingestion.schemas
    # collects them; every stream's kind is one of them.
    kinds: ClassVar[tuple[Kind, ...]] = ()
    # Real endpoints, and the same names as paths under SIBLING_SANDBOX_BASE_URL.
    urls: ClassVar[dict[str, str]] = {}
    sandbox_paths: ClassVar[dict[str, str]] = {}
    # Client credential names -> the sandbox's value for each; the real ones come from the
    # environment (<ID>_<NAME>), and all of them set means the real provider.
    credentials: ClassVar[dict[str, str]] = {}
    # Other settings the provider reads (see Setting). The methods below read Django's
    # settings through the module's `settings`; this attribute is only a declaration.
    settings: ClassVar[tuple[Setting, ...]] = ()
    # The receiver View class of /webhooks/<id>/ (URL name webhook_<id>), when the provider
    # delivers webhooks.
    webhook_receiver_path: ClassVar[str] = ""
    periodic: ClassVar[tuple[Periodic, ...]] = ()
    # The provider's quotas (see Budget): every sync charges them before each call.
    budgets: ClassVar[tuple[Budget, ...]] = ()
    # Keys of the stored credentials that are secrets (never shown, logged or exported).
    secret_fields: ClassVar[tuple[str, ...]] = ()
    default_sync_interval_s: ClassVar[int] = HOUR
    # How often a person may ask it to sync, in seconds (their connection card offers these):
    # what the provider's quotas, its own refresh rate and its pushes make sensible. Each
    # provider declares its own from its documentation; default_sync_interval_s is one of them.
    sync_interval_choices: ClassVar[tuple[int, ...]] = (HOUR, 6 * HOUR, DAY)
    # The furthest back a first sync may reach, in days (None: everything the provider keeps).
    # The default is Sibling's own bound for a provider that documents none.
    max_backfill_days: ClassVar[int | None] = 365
    # The provider fetches the history itself once, when the account is linked (a bank's
    # days requested at link time): the window is chosen on the connect step only, never after.
    backfill_fixed_at_connect: ClassVar[bool] = False
    reauth_message: ClassVar[str] = "Please connect this account again."
    # The provider's sync client (an ingestion.clients.SyncClient) and its processor, a pure
    # function (stream name, raw page) -> ingestion.schemas.ProcessedPage.
    client_path: ClassVar[str] = ""
    processor_path: ClassVar[str] = ""
    # The function that processes this provider's stored webhook events (ingestion.webhooks).
    webhook_handler_path: ClassVar[str] = ""

    @classmethod
    def backfill_choices(cls) -> tuple[int, ...]:
        """The history windows a person may choose, in days, shortest first: the common ones
        within the provider's maximum, then the maximum itself (BACKFILL_EVERYTHING when the
        provider keeps everything)."""
        limit = cls.max_backfill_days
        common = tuple(d for d in BACKFILL_CHOICES_DAYS if limit is None or d < limit)
        return (*common, BACKFILL_EVERYTHING if limit is None else limit)

    @classmethod
    def backfill_days_default(cls) -> int:
        """The window of a first sync nobody chose: SIBLING_BACKFILL_DAYS, within the maximum."""
        days = max(1, int(settings.SIBLING_BACKFILL_DAYS))
        return days if cls.max_backfill_days is None else min(days, cls.max_backfill_days)

    @classmethod
    def backfill_days_valid(cls, days: int | None) -> bool:
        return days in cls.backfill_choices() or days == cls.backfill_days_default()

    @classmethod
    def budgets_declared(cls) -> tuple[Budget, ...]:
        """The budgets in force (the declaration, unless a setting picks another table: a
        provider whose quotas depend on its project's age overrides this). Limits are
        overridden by settings in ``ingestion.budgets``."""
        return cls.budgets

    @classmethod
    def budget_remaining(cls, response: requests.Response) -> dict[str, int]:
        """Units left in the provider's current window of each named budget, as an answer
        reports them (usage headers); ``ingestion.budgets`` lowers its buckets to them."""
        return {}

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

    The backend (``backend()``, a subclass of ``backend_base`` named after the provider's id and
    registered as ``sources.providers.backends.<id>``) takes its endpoints and client
    credentials from here. Tokens land in the connection's encrypted credentials, never in
    social_django's ``extra_data`` (see sources.pipeline).
    """

    auth_mode = "oauth2"
    secret_fields = ("access_token", "refresh_token")
    # Each declared scope in words, for a connect refused because it was left unticked.
    scope_descriptions: ClassVar[dict[str, str]] = {}

    @staticmethod
    def scope_expand(scope: str) -> str:
        """A scope as the provider's token response writes it (some write short names out)."""
        return scope

    # The social-auth backend class this provider's backend is built on: any standard OAuth2
    # provider works with ProviderOAuth2; one with its own dialect sets a subclass of
    # sources.providers.oauth2.ProviderBackendMixin and social-core's backend for it.
    backend_base: ClassVar[type] = ProviderOAuth2
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
    def backend(cls) -> type:
        """The social-auth backend of this provider, built once from ``backend_base``.

        Named ``sources.providers.backends.<id>``, which imports it (Django and social-auth
        make a backend's dotted path from its module and class name).
        """
        built = cls.__dict__.get("_backend")
        if built is None:
            built = type(
                cls.id,
                (cls.backend_base,),
                {"name": cls.id, "provider": cls, "__module__": "sources.providers.backends"},
            )
            cls._backend = built  # on this class only: a subclass builds its own
        return built

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
        provider whose revocation is another call (``POST /oauth/deauthorize`` with the
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
        # One attempt, every answer read here: a revocation not confirmed is kept and retried
        # with backoff by sources.revocations, so the person waiting is not held for retries.
        http = ProviderHttp(
            provider_name=cls.name,
            policy=RetryPolicy(max_attempts=1),
            counter=CallCounter(),
            check=lambda response: None,
        )
        try:
            with http:
                response = http.request("POST", cls.url("revoke"), data=data, auth=auth)
        except ProviderError as err:  # unreachable, a timeout: the network error's class
            raise RevocationError(
                f"{cls.name} could not be reached to withdraw Sibling's access",
                code=type(err.__cause__ or err).__name__,
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
    """A personal API key the person pastes in, checked against the API before it is saved.

    The connect page (``sources:connect``) shows ``key_help``, checks the key with
    ``key_check`` and saves it under ``external_account_id_for_key`` with ``account_label``.
    """

    auth_mode = "api_key"
    secret_fields = ("api_key",)
    key_help: ClassVar[str] = ""
    # The connection's label on Connections: the key names no account Sibling could show.
    account_label: ClassVar[str] = ""

    @classmethod
    def key_check(cls, api_key: str) -> None:
        """Raise ProviderAuthError when the provider does not accept the key."""
        raise NotImplementedError

    @classmethod
    def external_account_id_for_key(cls, api_key: str) -> str:
        # The key itself is a secret; a digest tells two keys apart without revealing either.
        return hashlib.sha256(api_key.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class LinkResult:
    """What a hosted link's exchange gives: the account, its credentials and its label."""

    external_account_id: str
    credentials: dict[str, Any] = field(repr=False)  # secrets: never in a repr or a log
    account_label: str


class HostedLinkProvider(Provider):
    """A hosted link: the provider's own script opens its dialog on Sibling's page.

    The page (``sources:connect``) loads ``url("link_script")``, asks Sibling for a link token
    (``link_token_create``), and opens the dialog through the global the script defines
    (``link_global``): ``window[link_global].create({token, onSuccess, onExit})`` returns a
    handler whose ``open()`` shows it. On success the dialog hands the page a public token and
    metadata, which Sibling exchanges server side (``link_exchange``) for the credentials.
    A person may link several accounts (several banks, say).
    """

    auth_mode = "hosted_link"
    secret_fields = ("access_token",)
    # The global name the hosted script defines (the provider's documented web API).
    link_global: ClassVar[str] = ""
    # What the connect page says about the dialog, and the label of the button that opens it.
    link_help: ClassVar[str] = ""
    link_button: ClassVar[str] = "Continue"
    # Names of ``urls`` the hosted script calls from the page itself: the page's
    # Content-Security-Policy allows their origins in connect-src (sibling.csp).
    link_connect_urls: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def link_token_create(
        cls,
        *,
        client_user_id: str,
        credentials: dict[str, Any] | None = None,
        backfill_days: int | None = None,
    ) -> str:
        """A short-lived token that opens the dialog for this person. Raises ProviderError.

        With ``credentials`` (a connection's, to reconnect it), the token opens the dialog for
        that same account where the provider can (an update mode), not for a new one.
        ``backfill_days`` is the history the person chose for a new account (None: the
        default), for a provider that fetches it when the account is linked.
        """
        raise NotImplementedError

    @classmethod
    def link_update(
        cls, credentials: dict[str, Any], public_token: str, metadata: dict[str, Any]
    ) -> LinkResult:
        """What the dialog opened with a connection's credentials (``link_token_create``)
        gives back. By default a new exchange; a provider whose update mode keeps the account
        returns the same credentials once they work again. Raises ProviderError."""
        return cls.link_exchange(public_token, metadata)

    @classmethod
    def link_exchange(cls, public_token: str, metadata: dict[str, Any]) -> LinkResult:
        """Exchange the dialog's public token for credentials. Raises ProviderError.

        ``metadata`` comes from the person's browser: it may be forged, so it serves only for
        the label (cut short), never for the account id or the credentials.
        """
        raise NotImplementedError

    @classmethod
    def revocation_token(cls, credentials: dict[str, Any]) -> RevocationToken | None:
        # The access token is the whole grant: removing the linked account ends it.
        if credentials.get("access_token"):
            return RevocationToken(credentials["access_token"], "access_token")
        return None
