from sources.providers.base import Periodic, Setting, Stream
from sources.providers.gmail.kinds import EMAIL_MESSAGE
from sources.providers.google import GOOGLE_SANDBOX_PATHS, GOOGLE_URLS, GoogleProvider


def batch_size(text: str) -> int:
    """GMAIL_BATCH_SIZE: 1 to 100 calls per batch (Google's limit)."""
    value = int(text)
    if not 1 <= value <= 100:
        raise ValueError("must be between 1 and 100")
    return value


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
    )
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
    default_sync_interval_s = 900
    client_path = "sources.providers.gmail.client.GmailSyncClient"
    processor_path = "sources.providers.gmail.processors.page_process"
