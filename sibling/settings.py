"""Django settings, read from the environment (see README: "Configuration").

Development needs nothing set (``make run`` exports DEBUG=1); production sets at least SECRET_KEY,
ALLOWED_HOSTS, MONGODB_URI and SIBLING_MASTER_KEY (or a cloud KMS).
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import environ
from csp import constants as csp_constants
from django.core.exceptions import ImproperlyConfigured
from pymongo.encryption_options import AutoEncryptionOpts

from sibling.embedded import DEFAULT_HOST, DEFAULT_PORT, server_uri
from sibling.master_key import master_key_load
from sources.providers.config import settings_from_environment

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("SIBLING_VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env()

DEBUG = env.bool("DEBUG", default=False)

SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY is required when DEBUG is off")
    SECRET_KEY = "django-insecure-development-only-key-never-use-in-production-0123456789"  # noqa: S105

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "sibling.apps.MongoAdminConfig",
    "sibling.apps.MongoAuthConfig",
    "sibling.apps.MongoContentTypesConfig",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_mongodb_backend",
    "sibling.apps.MongoSocialAuthConfig",
    "sibling.apps.MongoDjangoQConfig",
    "rest_framework",
    "drf_spectacular",
    "django_ratelimit",
    "sibling.apps.SiblingConfig",
    "sources.apps.SourcesConfig",
    "sources.sandbox.apps.SandboxConfig",
    "ingestion.apps.IngestionConfig",
    "outbound.apps.OutboundConfig",
    "alerts.apps.AlertsConfig",
]

# Contrib and third-party apps get migrations generated for ObjectIdAutoField.
MIGRATION_MODULES = {
    "admin": "sibling.contrib_migrations.admin",
    "auth": "sibling.contrib_migrations.auth",
    "contenttypes": "sibling.contrib_migrations.contenttypes",
    "sessions": "sibling.contrib_migrations.sessions",
    "social_django": "sibling.contrib_migrations.social_django",
    "django_q": "sibling.contrib_migrations.django_q",
}
DEFAULT_AUTO_FIELD = "django_mongodb_backend.fields.ObjectIdAutoField"

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "sibling.csp.ProviderCSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # The signed-in person's time zone for the request (after authentication).
    "sibling.middleware.PersonTimeZoneMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "sources.middleware.ConnectErrorMiddleware",
]

ROOT_URLCONF = "sibling.urls"
WSGI_APPLICATION = "sibling.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "sources.context_processors.sandbox",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
# Unset MONGODB_URI means the embedded development server (`make db`); set, the project never
# starts a server of its own.
MONGODB_URI = env.str("MONGODB_URI", default="")
EMBEDDED_DATABASE = not MONGODB_URI
_database_uri = MONGODB_URI or server_uri(DEFAULT_HOST, env.int("MONGODB_PORT", DEFAULT_PORT))
MONGODB_NAME = env.str("MONGODB_NAME", default="") or (
    urlsplit(_database_uri).path.lstrip("/") or "sibling"
)

# --- Field-level encryption ------------------------------------------------------------------
# A local master key by default; a cloud KMS (aws, gcp, azure, kmip) by setting the provider, its
# credentials (JSON, as pymongo's kms_providers expects them) and the master key document (JSON,
# as ClientEncryption.create_data_key expects it). See README: "Encryption keys".
SIBLING_KMS_PROVIDER = env.str("SIBLING_KMS_PROVIDER", default="local")
SIBLING_KEY_VAULT_NAMESPACE = env.str(
    "SIBLING_KEY_VAULT_NAMESPACE", default="encryption.__keyVault"
)
# A local key may be named ("local:2027"), which lets a rotation hold the old and the new one.
if SIBLING_KMS_PROVIDER.split(":")[0] == "local":
    _kms_credentials = {
        "key": master_key_load(
            configured=env.str("SIBLING_MASTER_KEY", default=""),
            debug=DEBUG,
            key_file=Path(env.str("SIBLING_MASTER_KEY_FILE", default=str(VAR_DIR / "master.key"))),
        )
    }
    SIBLING_KMS_MASTER_KEY = None
else:
    try:
        _kms_credentials = json.loads(env.str("SIBLING_KMS_CREDENTIALS", default="{}"))
        SIBLING_KMS_MASTER_KEY = json.loads(env.str("SIBLING_KMS_MASTER_KEY", default="null"))
    except json.JSONDecodeError as err:
        raise ImproperlyConfigured(
            "SIBLING_KMS_CREDENTIALS and SIBLING_KMS_MASTER_KEY must be JSON"
        ) from err
    if SIBLING_KMS_MASTER_KEY is None:
        raise ImproperlyConfigured(f"SIBLING_KMS_MASTER_KEY is required for {SIBLING_KMS_PROVIDER}")
SIBLING_KMS_PROVIDERS = {SIBLING_KMS_PROVIDER: _kms_credentials}

DATABASES = {
    "default": {
        "ENGINE": "sibling.db",
        "HOST": _database_uri,
        "NAME": MONGODB_NAME,
        "OPTIONS": {
            # Values are encrypted explicitly (sibling.encryption); reads decrypt automatically.
            "auto_encryption_opts": AutoEncryptionOpts(
                kms_providers=SIBLING_KMS_PROVIDERS,
                key_vault_namespace=SIBLING_KEY_VAULT_NAMESPACE,
                bypass_auto_encryption=True,
            ),
        },
    },
}

# --- Workers (django-q2 on the MongoDB broker) ----------------------------------------------
Q_CLUSTER = {
    "name": env.str("SIBLING_Q_CLUSTER_NAME", default="sibling"),
    "workers": env.int("SIBLING_Q_WORKERS", default=2),
    "timeout": env.int("SIBLING_Q_TIMEOUT", default=600),
    # Unacknowledged tasks come back after `retry` seconds, which must exceed `timeout`.
    "retry": env.int("SIBLING_Q_TIMEOUT", default=600) + 60,
    # The default (0) retries a failing task forever.
    "max_attempts": env.int("SIBLING_Q_MAX_ATTEMPTS", default=3),
    "ack_failures": True,
    "save_limit": 1000,
    "catch_up": False,
    "poll": 0.5,
    "broker_class": "sibling.queue.ForkSafeMongoBroker",
    "mongo": {"host": _database_uri},
    "mongo_db": MONGODB_NAME,
    "sync": env.bool("SIBLING_Q_SYNC", default=False),
    "label": "Workers",
}
SIBLING_WORKER_HEARTBEAT_MAX_AGE = env.int("SIBLING_WORKER_HEARTBEAT_MAX_AGE", default=180)

# --- Syncs --------------------------------------------------------------------------------------
SIBLING_BACKFILL_DAYS = env.int("SIBLING_BACKFILL_DAYS", default=90)
SIBLING_RAW_PAGE_RETENTION_DAYS = env.int("SIBLING_RAW_PAGE_RETENTION_DAYS", default=30)
# A claimed connection stays claimed this long at most (longer than a task may run).
SIBLING_SYNC_LEASE_S = Q_CLUSTER["timeout"] + 120
SIBLING_SYNC_MAX_FAILURES = env.int("SIBLING_SYNC_MAX_FAILURES", default=5)
SIBLING_DISPATCH_BATCH = env.int("SIBLING_DISPATCH_BATCH", default=500)
# One worker process drives this many syncs at once (threads): dispatch enqueues the connections
# it claims in groups of this size, one task per group. Syncs wait on the network, not the CPU.
SIBLING_SYNC_THREADS = env.int("SIBLING_SYNC_THREADS", default=8)
# A sync fetches its next page while it stores the current one, with at most this many fetched
# pages waiting (memory stays flat); 0 fetches each page only once the one before is stored.
SIBLING_SYNC_PREFETCH_PAGES = env.int("SIBLING_SYNC_PREFETCH_PAGES", default=1)
# Connecting, resuming or "Sync now" starts the sync at once instead of at the next dispatch.
SIBLING_SYNC_ON_DUE = env.bool("SIBLING_SYNC_ON_DUE", default=True)
# Bearer token for GET /metrics (staff sessions may read it too); unset, only staff can.
SIBLING_METRICS_TOKEN = env.str("SIBLING_METRICS_TOKEN", default="")
# (connect, read) seconds for every call to a provider, in syncs and connect flows alike: the
# wait for a connection, then the longest wait for the next bytes of an answer.
SIBLING_PROVIDER_TIMEOUT_S = (
    env.float("SIBLING_PROVIDER_CONNECT_TIMEOUT_S", default=5.0),
    env.float("SIBLING_PROVIDER_READ_TIMEOUT_S", default=30.0),
)
# Provider budgets (ingestion.budgets): every sync charges its provider's quotas before each
# call, in token buckets shared through MongoDB. BURST is the share of a quota that may go at
# once (the rest flows at the quota's rate); a call waits in place for at most MAX_WAIT_S,
# longer and the connection is deferred to when its budget refills. Off: nothing is charged.
SIBLING_BUDGETS = env.bool("SIBLING_BUDGETS", default=True)
SIBLING_BUDGET_BURST = env.float("SIBLING_BUDGET_BURST", default=0.05)
SIBLING_BUDGET_MAX_WAIT_S = env.float("SIBLING_BUDGET_MAX_WAIT_S", default=15.0)

# --- Change notifications (outbound) ---------------------------------------------------------
# Subscribers' endpoints may be http, and private or loopback addresses (the sandbox's receiver,
# a local test server), only with this on; it is on in development only.
SIBLING_SUBSCRIBER_ALLOW_HTTP = env.bool("SIBLING_SUBSCRIBER_ALLOW_HTTP", default=DEBUG)
# A delivery is retried with backoff for this long after its event, then it is "exhausted".
SIBLING_OUTBOUND_MAX_AGE_S = env.int("SIBLING_OUTBOUND_MAX_AGE_S", default=3 * 24 * 3600)
# A subscriber whose every delivery has failed for this long is paused, with the reason.
SIBLING_OUTBOUND_PAUSE_AFTER_S = env.int("SIBLING_OUTBOUND_PAUSE_AFTER_S", default=24 * 3600)
# Delivered notifications are kept this long (admin), then deleted.
SIBLING_OUTBOUND_RETENTION_DAYS = env.int("SIBLING_OUTBOUND_RETENTION_DAYS", default=7)
# (connect, read) seconds for a delivery to a subscriber's endpoint.
SIBLING_OUTBOUND_TIMEOUT_S = (
    env.float("SIBLING_OUTBOUND_CONNECT_TIMEOUT_S", default=5.0),
    env.float("SIBLING_OUTBOUND_READ_TIMEOUT_S", default=10.0),
)

# --- Providers ---------------------------------------------------------------------------------
# Each provider's endpoint URLs default to the real provider's; `<PROVIDER>_<NAME>_URL` overrides
# one (a staging service, say). In development a provider without real credentials talks to the
# built-in sandbox (sources/sandbox, mounted under /sandbox/), which cannot be enabled with DEBUG
# off. `<PROVIDER>_SANDBOX=0/1` forces the choice in development.
PORT = env.int("PORT", default=8000)
# Where providers reach Sibling (webhook URLs, push audiences). Required with DEBUG off:
# no silent fallback there, and `check --deploy` fails without it (sibling.checks).
SIBLING_PUBLIC_URL = env.str(
    "SIBLING_PUBLIC_URL", default=f"http://127.0.0.1:{PORT}" if DEBUG else ""
).rstrip("/")
SIBLING_SANDBOX_ALLOWED = DEBUG
SIBLING_SANDBOX_BASE_URL = env.str(
    "SIBLING_SANDBOX_BASE_URL", default=f"{SIBLING_PUBLIC_URL}/sandbox"
).rstrip("/")


# Every registered provider's settings, from what its declaration names (see
# sources.providers.config): SIBLING_PROVIDERS ({id: {"sandbox", "credentials", "urls"}}),
# SIBLING_SANDBOX_CLIENTS (the client credentials the sandbox accepts), each provider's declared
# settings (`<PROVIDER>_<NAME>`) and SIBLING_OAUTH2_BACKENDS (for AUTHENTICATION_BACKENDS).
_provider_settings = settings_from_environment(env, sandbox_allowed=SIBLING_SANDBOX_ALLOWED)
globals().update(_provider_settings)
# Sandbox clients whose refresh tokens rotate and are single use (as some providers' do);
# Google's do not.
SIBLING_SANDBOX_ROTATING_CLIENTS = set(env.list("SIBLING_SANDBOX_ROTATING_CLIENTS", default=[]))
# Sandbox clients whose token revocation is a strict RFC 7009 server (client authentication
# required) instead of Google's (the token alone).
SIBLING_SANDBOX_RFC7009_CLIENTS = set(env.list("SIBLING_SANDBOX_RFC7009_CLIENTS", default=[]))
# Redirect URIs every sandbox Google client accepts besides Sibling's own (each Google provider's
# social-auth complete URL under SIBLING_PUBLIC_URL or the sandbox's own origin); any other one
# gets Google's redirect_uri_mismatch page.
SIBLING_SANDBOX_REDIRECT_URIS = env.list("SIBLING_SANDBOX_REDIRECT_URIS", default=[])
# How long a sandbox bank takes to prepare a newly linked account: seconds until its recent
# transactions are ready, then seconds more until all of its history is (the tests make both 0).
SIBLING_SANDBOX_RECENT_READY_S = env.int("SIBLING_SANDBOX_RECENT_READY_S", default=10)
SIBLING_SANDBOX_HISTORY_READY_S = env.int("SIBLING_SANDBOX_HISTORY_READY_S", default=30)
# The sandbox's round trip (sources.sandbox.latency): "0" (off), milliseconds for every provider
# ("100"), or per provider id or family ("<id>=100,google=80,*=100"); jitter is a fraction (±).
SIBLING_SANDBOX_LATENCY_MS = env.str("SIBLING_SANDBOX_LATENCY_MS", default="0")
SIBLING_SANDBOX_LATENCY_JITTER = env.float("SIBLING_SANDBOX_LATENCY_JITTER", default=0.2)
# The providers' quotas as the sandbox enforces them (sources.sandbox.quotas): "on", "off", or
# limits overridden per quota ("<provider or family>.<quota>=<limit>,...", which implies on).
SIBLING_SANDBOX_QUOTAS = env.str("SIBLING_SANDBOX_QUOTAS", default="on")

# --- Webhooks ------------------------------------------------------------------------------------
# Where providers deliver: SIBLING_PUBLIC_URL + /webhooks/<provider>/, for each provider that
# declares a receiver (sibling/urls.py); their secrets and keys are the providers' declared
# settings above.
# Processed events are deleted after this many days (a TTL index); rejected deliveries are only
# counted, per provider, reason and sender address and hour, and those counts kept this long.
SIBLING_WEBHOOK_RETENTION_DAYS = env.int("SIBLING_WEBHOOK_RETENTION_DAYS", default=30)
SIBLING_WEBHOOK_REJECTION_LOG_DAYS = env.int("SIBLING_WEBHOOK_REJECTION_LOG_DAYS", default=7)

# --- Cache and rate limits ----------------------------------------------------------------------
# One cache shared by every process (rate limits must hold across gunicorn workers and hosts):
# a MongoDB collection (sibling.cache). Rates are "<count>/<period>" (s, m, h, d; "10/15m").
CACHES = {"default": {"BACKEND": "sibling.cache.MongoCache", "LOCATION": "cache"}}
# REST framework's form for the events API ("120/min": s, min, h, day), per person.
SIBLING_EVENTS_API_RATE = env.str("SIBLING_EVENTS_API_RATE", default="120/min")
SIBLING_LOGIN_RATE_IP = env.str("SIBLING_LOGIN_RATE_IP", default="30/10m")
SIBLING_LOGIN_RATE_USERNAME = env.str("SIBLING_LOGIN_RATE_USERNAME", default="10/10m")
SIBLING_SIGNUP_RATE = env.str("SIBLING_SIGNUP_RATE", default="10/h")
# Per person and per provider: API keys checked on a connect page, and hosted-link tokens (and,
# counted apart, their exchanges).
SIBLING_CONNECT_KEY_RATE = env.str("SIBLING_CONNECT_KEY_RATE", default="10/10m")
SIBLING_LINK_TOKEN_RATE = env.str("SIBLING_LINK_TOKEN_RATE", default="10/10m")
# How many proxies in front of Sibling append to X-Forwarded-For (1 behind the TLS proxy; 0 when
# clients connect directly). Per-address limits count the address the outermost proxy saw, not
# the proxy's own, which every client would share.
SIBLING_PROXY_COUNT = env.int("SIBLING_PROXY_COUNT", default=0)
RATELIMIT_IP_META_KEY = "sibling.throttles.client_address"

# --- Events API (REST framework, OpenAPI schema at /api/schema/) ------------------------------
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Sibling API",
    "DESCRIPTION": (
        "Sibling's own apps send a person's behavioral and volunteered events "
        "(`/api/events/`); a person's apps and Sibling's other modules read records and "
        "connections (`/api/v1/`)."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The published schema describes the events and records APIs only, not admin or pages.
    "PREPROCESSING_HOOKS": ["ingestion.api.schema_endpoints_filter"],
}
# The records API (/api/v1/): requests per token (REST framework's form), and how long after a
# record is stamped it is listed (longer than any page's write takes: see ingestion.records_api).
SIBLING_RECORDS_API_RATE = env.str("SIBLING_RECORDS_API_RATE", default="600/min")
SIBLING_RECORDS_API_SETTLE_S = env.float("SIBLING_RECORDS_API_SETTLE_S", default=5.0)

# --- Email (alerts: one email per incident a connection has) -----------------------------------
# SMTP from EMAIL_URL (django-environ: smtp+tls://user:password@host:587 for STARTTLS,
# smtp+ssl://user:password@host:465 for TLS from the start; URL-encode @ and : in the user and
# password), or from EMAIL_HOST, EMAIL_PORT (587, or 465 with EMAIL_USE_SSL), EMAIL_HOST_USER,
# EMAIL_HOST_PASSWORD, EMAIL_USE_TLS (on unless EMAIL_USE_SSL); without EMAIL_HOST, this host's
# own mail server (localhost:25, no TLS). With DEBUG on and neither EMAIL_URL nor EMAIL_HOST set,
# emails are printed by the console backend instead of sent. EMAIL_BACKEND overrides the backend.
_email_url = env.str("EMAIL_URL", default="")
if _email_url:
    globals().update(
        {k: v for k, v in env.email_url_config(_email_url).items() if v not in (None, "")}
    )
else:
    # A named server is a mail provider's (submission port, STARTTLS); none is this host's own
    # mail server (port 25, as Django's defaults).
    EMAIL_HOST = env.str("EMAIL_HOST", default="")
    EMAIL_USE_SSL = env.bool("EMAIL_USE_SSL", default=False)
    EMAIL_PORT = env.int(
        "EMAIL_PORT", default=(465 if EMAIL_USE_SSL else 587) if EMAIL_HOST else 25
    )
    EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
    EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", default="")
    EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=bool(EMAIL_HOST) and not EMAIL_USE_SSL)
    EMAIL_BACKEND = (
        "django.core.mail.backends.console.EmailBackend"
        if DEBUG and not EMAIL_HOST
        else "django.core.mail.backends.smtp.EmailBackend"
    )
    EMAIL_HOST = EMAIL_HOST or "localhost"
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default=globals()["EMAIL_BACKEND"])
# Seconds an SMTP exchange may take (Django's default waits forever).
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=20)
DEFAULT_FROM_EMAIL = env.str(
    "DEFAULT_FROM_EMAIL",
    default=f"Sibling <no-reply@{urlsplit(SIBLING_PUBLIC_URL).hostname or 'localhost'}>",
)
SERVER_EMAIL = env.str("SERVER_EMAIL", default=DEFAULT_FROM_EMAIL)

# --- Accounts and connect flows --------------------------------------------------------------
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "sources:connections"
LOGOUT_REDIRECT_URL = "login"
# Provider accounts are connected, never used to sign in: the pipeline refuses a flow without a
# signed-in person (sources.pipeline.require_signed_in_person). One backend per OAuth2 provider.
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    *_provider_settings["SIBLING_OAUTH2_BACKENDS"],
]
SOCIAL_AUTH_URL_NAMESPACE = "social"
SOCIAL_AUTH_JSONFIELD_ENABLED = True
SOCIAL_AUTH_RAISE_EXCEPTIONS = False
SOCIAL_AUTH_LOGIN_REDIRECT_URL = "/connections/"
SOCIAL_AUTH_LOGIN_ERROR_URL = "/connections/"
SOCIAL_AUTH_GOOGLE_OAUTH2_USE_UNIQUE_USER_ID = True
# The connect form's history window, kept from the begin step for sources.pipeline.
SOCIAL_AUTH_FIELDS_STORED_IN_SESSION = ["backfill_days"]
SOCIAL_AUTH_PIPELINE = (
    "social_core.pipeline.social_auth.social_details",
    "social_core.pipeline.social_auth.social_uid",
    "social_core.pipeline.social_auth.auth_allowed",
    "sources.pipeline.require_signed_in_person",
    "social_core.pipeline.social_auth.social_user",
    "social_core.pipeline.social_auth.associate_user",
    "social_core.pipeline.social_auth.load_extra_data",
    "sources.pipeline.connection_store",
)

# --- Auth, i18n, static ---------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(VAR_DIR / "static")))

# --- Security (production values come from the environment) ----------------------------------
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
if env.bool("SECURE_PROXY_SSL_HEADER", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=not DEBUG)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True

# Content-Security-Policy (django-csp; sibling.csp adds the sources the providers' connect flows
# need, from their configured URLs). Scripts: this origin, or inline with the page's nonce only.
# Styles: inline allowed, because Django admin's own templates and list displays (status badges)
# and the charts' bar heights use style attributes and <style> blocks; an injected style cannot run
# code, while scripts, where injection does harm, stay nonce-only.
# SIBLING_CSP_REPORT_ONLY=1 sends the same policy as Content-Security-Policy-Report-Only (browsers
# report, nothing is blocked), to try a change in production first; SIBLING_CSP_REPORT_URI is
# where browsers send their reports (unset: only the browser console shows them).
SIBLING_CSP_REPORT_ONLY = env.bool("SIBLING_CSP_REPORT_ONLY", default=False)
SIBLING_CSP_REPORT_URI = env.str("SIBLING_CSP_REPORT_URI", default="")
_csp_policy = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'", csp_constants.NONCE],
        "style-src": ["'self'", "'unsafe-inline'"],
        "connect-src": ["'self'"],
        "form-action": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "frame-ancestors": ["'none'"],
        "report-uri": [SIBLING_CSP_REPORT_URI] if SIBLING_CSP_REPORT_URI else None,
    }
}
CONTENT_SECURITY_POLICY = None if SIBLING_CSP_REPORT_ONLY else _csp_policy
CONTENT_SECURITY_POLICY_REPORT_ONLY = _csp_policy if SIBLING_CSP_REPORT_ONLY else None

SILENCED_SYSTEM_CHECKS = [
    # social_django.UserSocialAuth declares a check constraint (uid != "") that MongoDB cannot
    # enforce; social-core never stores an empty uid.
    "models.W027",
    # django-ratelimit warns about any cache it does not list; sibling.cache.MongoCache is shared
    # and its add/incr are atomic (tests/sibling/test_cache.py), which is what the warning guards.
    "django_ratelimit.W001",
]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "sibling.logs.ContextFilter"}},
    "formatters": {
        "plain": {
            "()": "sibling.logs.ScrubbingFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(process)d "
            "[%(provider)s %(connection)s %(run)s]: %(message)s",
        },
        "json": {"()": "sibling.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": env.str("LOG_FORMAT", default="plain" if DEBUG else "json"),
            "filters": ["context"],
        }
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django_q": {"level": env.str("LOG_LEVEL_WORKERS", default="WARNING")},
        "pymongo": {"level": "WARNING"},
        "urllib3": {"level": "WARNING"},
    },
}
