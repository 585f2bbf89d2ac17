"""The sandbox's URL contract, relative to settings.SIBLING_SANDBOX_BASE_URL (…/sandbox)."""

from django.urls import path

from . import faults, gmail, google, health, plaid, rescuetime, webhooks

app_name = "sandbox"

_GMAIL = "google/gmail/v1/users/<str:user_id>"
_HEALTH = "google/health/v4/users/<str:user>"

urlpatterns = [
    # Google OAuth 2.0 (one sandbox for the Gmail and the Google Health clients)
    path("google/o/oauth2/v2/auth", google.authorize, name="google-authorize"),
    path("google/token", google.token, name="google-token"),
    path("google/revoke", google.revoke, name="google-revoke"),
    path("google/oauth2/v3/userinfo", google.userinfo, name="google-userinfo"),
    path("google/oauth2/v3/certs", webhooks.google_certs, name="google-certs"),
    path("google/avatar/<str:sub>.svg", google.avatar, name="google-avatar"),
    # Gmail API v1
    path(f"{_GMAIL}/profile", gmail.profile, name="gmail-profile"),
    path(f"{_GMAIL}/messages", gmail.messages_list, name="gmail-messages"),
    path(f"{_GMAIL}/messages/<str:message_id>", gmail.message_get, name="gmail-message"),
    path(f"{_GMAIL}/history", gmail.history_list, name="gmail-history"),
    path(f"{_GMAIL}/watch", gmail.watch, name="gmail-watch"),
    path(f"{_GMAIL}/stop", gmail.stop, name="gmail-stop"),
    # Google Health API v4
    path(f"{_HEALTH}/identity", health.identity, name="health-identity"),
    path(
        f"{_HEALTH}/dataTypes/<str:data_type>/dataPoints",
        health.data_points,
        name="health-data-points",
    ),
    path(
        f"{_HEALTH}/dataTypes/<str:data_type>/dataPoints:dailyRollUp",
        health.daily_roll_up,
        name="health-daily-roll-up",
    ),
    path(
        "google/health/webhook-public-key.pem",
        webhooks.health_public_key,
        name="health-webhook-public-key",
    ),
    # Plaid
    path("plaid/link-initialize.js", plaid.link_script, name="plaid-link-script"),
    path("plaid/link/token/create", plaid.link_token_create, name="plaid-link-token-create"),
    path(
        "plaid/link/public_token/create",
        plaid.link_public_token_create,
        name="plaid-link-public-token-create",
    ),
    path(
        "plaid/item/public_token/exchange",
        plaid.item_public_token_exchange,
        name="plaid-public-token-exchange",
    ),
    path("plaid/item/get", plaid.item_get, name="plaid-item-get"),
    path("plaid/item/remove", plaid.item_remove, name="plaid-item-remove"),
    path("plaid/item/webhook/update", plaid.item_webhook_update, name="plaid-webhook-update"),
    path("plaid/accounts/get", plaid.accounts_get, name="plaid-accounts-get"),
    path("plaid/transactions/sync", plaid.transactions_sync, name="plaid-transactions-sync"),
    path(
        "plaid/webhook_verification_key/get",
        plaid.webhook_verification_key_get,
        name="plaid-webhook-verification-key-get",
    ),
    # RescueTime
    path("rescuetime/anapi/data", rescuetime.anapi_data, name="rescuetime-data"),
    path(
        "rescuetime/anapi/daily_summary_feed",
        rescuetime.daily_summary_feed,
        name="rescuetime-daily-summary-feed",
    ),
    # Test and development control
    path("_faults", faults.faults_api, name="faults"),
    path("_webhooks", webhooks.webhooks_api, name="webhooks"),
]
