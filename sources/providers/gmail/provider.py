from django.conf import settings

from sources.providers.base import DAY, HOUR, MINUTE, Budget, Periodic, Setting, Stream
from sources.providers.gmail.kinds import EMAIL_MESSAGE
from sources.providers.google import GOOGLE_SANDBOX_PATHS, GOOGLE_URLS, GoogleProvider


def batch_size(text: str) -> int:
    """GMAIL_BATCH_SIZE: 1 to 100 calls per batch (Google's limit)."""
    value = int(text)
    if not 1 <= value <= 100:
        raise ValueError("must be between 1 and 100")
    return value


# Quota units per method (https://developers.google.com/workspace/gmail/api/reference/quota):
# projects created since May 2026 ("2026") and those that keep the older table ("legacy").
# Methods not listed cost the table's default (getProfile and labels are 1 unit in both).
QUOTA_TABLES = {
    "2026": {
        "user_limit": 6_000,
        "costs": {
            "messages.list": 5,
            "messages.get": 20,
            "messages.attachments.get": 20,
            "history.list": 2,
            "threads.get": 40,
            "watch": 100,
            "stop": 50,
            "getProfile": 1,
        },
    },
    "legacy": {
        "user_limit": 15_000,
        "costs": {
            "messages.list": 5,
            "messages.get": 5,
            "messages.attachments.get": 5,
            "history.list": 2,
            "threads.get": 10,
            "watch": 100,
            "stop": 50,
            "getProfile": 1,
        },
    },
}
PROJECT_LIMIT = 1_200_000  # units per minute per project, both tables


def quota_budgets(table: str) -> tuple[Budget, ...]:
    """The per-user and per-project budgets of one quota table."""
    if table not in QUOTA_TABLES:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(f"GMAIL_QUOTA_TABLE must be one of {', '.join(QUOTA_TABLES)}")
    chosen = QUOTA_TABLES[table]
    costs = chosen["costs"]
    return (
        Budget("user", limit=chosen["user_limit"], window_s=60, costs=costs, default_cost=5),
        Budget("project", limit=PROJECT_LIMIT, window_s=60, per="app", costs=costs, default_cost=5),
    )


class Gmail(GoogleProvider):
    """Mail metadata (never bodies) through the Gmail API."""

    id = "gmail"
    name = "Gmail"
    category = "external"
    # https://developers.google.com/workspace/gmail/api/auth/scopes
    scopes = ("https://www.googleapis.com/auth/gmail.readonly",)
    scope_descriptions = {
        "https://www.googleapis.com/auth/gmail.readonly": "View your email messages and settings"
    }
    streams = (Stream("messages", kind="email_message"),)
    kinds = (EMAIL_MESSAGE,)
    credentials = {"client_id": "sandbox-gmail-client", "client_secret": "sandbox-gmail-secret"}
    settings = (
        # Pushes carry a Google-signed OIDC token for this audience (unset: the receiver's URL
        # under SIBLING_PUBLIC_URL) from this service account, for mailboxes watched on this
        # Pub/Sub topic (unset: no watch, no push).
        Setting("push_audience"),
        Setting(
            "push_service_account",
            sandbox_default="gmail-push@sibling-sandbox.iam.gserviceaccount.com",
        ),
        Setting("push_topic", sandbox_default="projects/sibling-sandbox/topics/gmail"),
        # Messages read per batch request: Google allows 100 and advises at most 50.
        Setting("batch_size", default=50, cast=batch_size),
        # Which quota table the Google project has: "2026" (created since May 2026) or
        # "legacy" (kept its older quotas). It sets the per-user limit and the method costs.
        Setting("quota_table", default="2026"),
    )
    budgets = quota_budgets("2026")
    urls = {
        **GOOGLE_URLS,
        "api": "https://gmail.googleapis.com/gmail/v1",
        # https://developers.google.com/workspace/gmail/api/guides/batch
        "batch": "https://gmail.googleapis.com/batch/gmail/v1",
        # The keys that sign Pub/Sub push tokens.
        "push_certs": "https://www.googleapis.com/oauth2/v3/certs",
    }
    sandbox_paths = {
        **GOOGLE_SANDBOX_PATHS,
        "api": "/google/gmail/v1",
        "batch": "/google/batch/gmail/v1",
        "push_certs": "/google/oauth2/v3/certs",
    }
    webhook_handler_path = "sources.providers.gmail.webhooks.event_handle"
    webhook_receiver_path = "sources.providers.gmail.webhooks.GmailWebhookReceiver"
    # A watch lasts 7 days: renewed daily for every active mailbox.
    periodic = (
        Periodic("gmail-watch-renew", "sources.providers.gmail.tasks.watch_renew_all", 24 * 60),
    )
    default_sync_interval_s = 15 * MINUTE
    # Push brings new mail within seconds; the schedule is the safety net. A sync with nothing
    # new costs one history.list (2 units of the 6,000 a minute a person has:
    # https://developers.google.com/workspace/gmail/api/reference/quota), so every 15 minutes
    # is cheap.
    sync_interval_choices = (15 * MINUTE, HOUR, 6 * HOUR, DAY)
    # messages.list without an ``after:`` query lists the whole mailbox: Gmail keeps everything.
    max_backfill_days = None
    client_path = "sources.providers.gmail.client.GmailSyncClient"
    processor_path = "sources.providers.gmail.processors.page_process"

    @classmethod
    def budgets_declared(cls) -> tuple[Budget, ...]:
        return quota_budgets(getattr(settings, "GMAIL_QUOTA_TABLE", "2026"))
