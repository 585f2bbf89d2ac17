from sources.providers.base import DAY, HOUR, MINUTE, Budget, Periodic, Setting, Stream
from sources.providers.google import GOOGLE_SANDBOX_PATHS, GOOGLE_URLS, GoogleProvider
from sources.providers.google_calendar.kinds import CALENDAR_EVENT

# How long a channel is asked to live, and how often channels are renewed. Google may end a
# channel sooner than asked (the channel's answer says when); renewal replaces every channel
# that ends within RENEW_MARGIN of a run, so one missed run loses no notification.
CHANNEL_TTL_S = 7 * 24 * 3600
RENEW_EVERY_MINUTES = 60


class GoogleCalendar(GoogleProvider):
    """Events of every calendar in the person's calendar list, through the Calendar API v3."""

    id = "google_calendar"
    name = "Google Calendar"
    category = "external"
    # https://developers.google.com/workspace/calendar/api/auth: the calendar list and events,
    # read only.
    scopes = ("https://www.googleapis.com/auth/calendar.readonly",)
    # How Google's consent screen names it, for a connect that lacks it.
    scope_descriptions = {
        "https://www.googleapis.com/auth/calendar.readonly": (
            "See and download any calendar you can access using your Google Calendar"
        )
    }
    streams = (Stream("events", kind="calendar_event"),)
    kinds = (CALENDAR_EVENT,)
    credentials = {
        "client_id": "sandbox-google_calendar-client",
        "client_secret": "sandbox-google_calendar-secret",
    }
    settings = (
        # Off: no channels are opened (syncs still run on schedule). Notifications need
        # SIBLING_PUBLIC_URL to be an https address Google can reach.
        Setting("push", default=True, cast=bool),
        # The lifetime asked of each channel, in seconds.
        Setting("channel_ttl_s", default=CHANNEL_TTL_S, cast=int),
    )
    # "channels" holds each watched calendar's channel, with the secret token notifications
    # must carry: never shown.
    secret_fields = ("access_token", "refresh_token", "channels")
    urls = {**GOOGLE_URLS, "api": "https://www.googleapis.com/calendar/v3"}
    sandbox_paths = {**GOOGLE_SANDBOX_PATHS, "api": "/google/calendar/v3"}
    webhook_receiver_path = "sources.providers.google_calendar.webhooks.CalendarWebhookReceiver"
    webhook_handler_path = "sources.providers.google_calendar.webhooks.event_handle"
    periodic = (
        Periodic(
            "google_calendar-channels-renew",
            "sources.providers.google_calendar.tasks.channels_renew_all",
            RENEW_EVERY_MINUTES,
        ),
    )
    # Notifications ask for a sync as soon as something changes; the schedule is the safety net
    # (Google says notifications are not fully reliable).
    # https://developers.google.com/workspace/calendar/api/guides/quota: requests per user
    # and per project, per minute (sliding).
    budgets = (
        Budget("user", limit=600, window_s=60),
        Budget("project", limit=10_000, window_s=60, per="app"),
    )
    default_sync_interval_s = HOUR
    # Push asks for a sync on every change; a sync with nothing new costs one events.list per
    # calendar, against 600 requests a minute per person.
    sync_interval_choices = (15 * MINUTE, HOUR, 6 * HOUR, DAY)
    # events.list without timeMin lists every event the calendar holds (Google's sync guide
    # bounds its sample's first sync at one year back, a choice, not a limit):
    # https://developers.google.com/workspace/calendar/api/guides/sync
    max_backfill_days = None
    client_path = "sources.providers.google_calendar.client.CalendarSyncClient"
    processor_path = "sources.providers.google_calendar.processors.page_process"
