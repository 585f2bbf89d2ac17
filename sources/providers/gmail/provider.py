from sources.providers.base import Stream
from sources.providers.google import GOOGLE_SANDBOX_PATHS, GOOGLE_URLS, GoogleProvider


class Gmail(GoogleProvider):
    """Mail metadata (never bodies) through the Gmail API."""

    id = "gmail"
    name = "Gmail"
    category = "external"
    backend_path = "sources.providers.gmail.auth.GmailOAuth2"
    # https://developers.google.com/workspace/gmail/api/auth/scopes
    scopes = ("https://www.googleapis.com/auth/gmail.readonly",)
    streams = (
        Stream("messages", primary_key="id", cursor_field="historyId", kind="email_message"),
    )
    urls = {
        **GOOGLE_URLS,
        "api": "https://gmail.googleapis.com/gmail/v1",
        # The keys that sign Pub/Sub push tokens.
        "push_certs": "https://www.googleapis.com/oauth2/v3/certs",
    }
    sandbox_paths = {
        **GOOGLE_SANDBOX_PATHS,
        "api": "/google/gmail/v1",
        "push_certs": "/google/oauth2/v3/certs",
    }
    webhook_handler_path = "sources.providers.gmail.webhooks.event_handle"
    default_sync_interval_s = 900
    client_path = "sources.providers.gmail.client.GmailSyncClient"
    processor_path = "sources.providers.gmail.processors.page_process"
