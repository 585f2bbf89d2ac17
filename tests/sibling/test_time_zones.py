"""A person's time zone: taken from the browser at sign-up, edited in settings, active on every
page they are signed in to, used by the sleep form and the export."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from ingestion.export import export_stream
from ingestion.storage import record_decode, records_collection
from sibling.forms import TIME_ZONE_UNKNOWN
from sibling.models import Person
from sibling.people import person_of, time_zone_valid
from tests.factories import UserFactory
from tests.sources.test_browser import browser  # noqa: F401 (a fixture)

pytestmark = pytest.mark.django_db
SETTINGS = "/settings/"
PARIS = "Europe/Paris"


def login(client, user):
    client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
    return client


def zone_set(user, name: str) -> Person:
    person = person_of(user)
    person.time_zone = name
    person.save(update_fields=["time_zone"])
    return person


# --- settings page ------------------------------------------------------------------------


def test_anonymous_is_sent_to_log_in(client):
    response = client.get(SETTINGS)
    assert response.status_code == 302
    assert response["Location"] == f"/login/?next={SETTINGS}"
    response = client.post(SETTINGS, {"time_zone": PARIS})
    assert response.status_code == 302 and Person.objects.count() == 0


def test_the_nav_links_to_settings(client):
    page = login(client, UserFactory()).get("/settings/privacy/")
    assert f'href="{SETTINGS}"' in page.content.decode()


def test_a_person_sets_their_zone_and_turns_alert_emails_off(client):
    user = UserFactory()
    page = login(client, user).get(SETTINGS)
    assert page.status_code == 200
    html = page.content.decode()
    assert '<option value="UTC" selected>' in html
    assert f'<option value="{PARIS}">' in html
    # The browser's zone is offered by a static script (no inline script: the CSP).
    assert "sibling/time_zone.js" in html and "<script>" not in html

    response = client.post(SETTINGS, {"time_zone": PARIS}, follow=True)
    assert response.redirect_chain == [(SETTINGS, 302)]
    assert f"Times are shown in {PARIS}." in response.content.decode()
    person = person_of(user)
    assert person.time_zone == PARIS
    # An unticked box is not sent: the emails are off.
    assert person.alert_emails is False
    assert f'<option value="{PARIS}" selected>' in response.content.decode()

    client.post(SETTINGS, {"time_zone": PARIS, "alert_emails": "on"})
    assert person_of(user).alert_emails is True


@pytest.mark.parametrize(
    "name",
    ["Mars/Olympus_Mons", "localtime", "../../etc/passwd", "europe/paris", "x" * 500, ""],
)
def test_an_unknown_zone_is_refused_with_a_clear_error_and_nothing_changes(client, name):
    user = UserFactory()
    zone_set(user, "Asia/Tokyo")
    response = login(client, user).post(SETTINGS, {"time_zone": name, "alert_emails": ""})
    assert response.status_code == 400
    expected = TIME_ZONE_UNKNOWN % {"value": name} if name else "Choose a time zone."
    assert response.context["form"].errors["time_zone"] == [expected]
    assert 'role="alert"' in response.content.decode()
    person = person_of(user)
    assert (person.time_zone, person.alert_emails) == ("Asia/Tokyo", True)


def test_a_person_changes_only_their_own_settings(client):
    mine, theirs = UserFactory(), UserFactory()
    zone_set(theirs, "America/Denver")
    login(client, mine).post(SETTINGS, {"time_zone": PARIS})
    assert person_of(theirs).time_zone == "America/Denver"
    assert person_of(mine).time_zone == PARIS


def test_localtime_is_no_place():
    # "localtime" would be whatever zone the server runs in.
    assert not time_zone_valid("localtime")
    assert time_zone_valid(PARIS) and time_zone_valid("UTC")


def test_a_persons_zone_is_only_read_never_made():
    # Syncs and exports read it too: a sync still running while the person's erasure deletes
    # their account must not bring a settings row back.
    from sibling.people import person_zone

    user = UserFactory()
    assert person_zone(user).key == "UTC"
    assert person_zone(user.pk).key == "UTC"
    assert not Person.objects.filter(user_id=user.pk).exists()
    zone_set(user, "Asia/Tokyo")
    assert person_zone(user.pk).key == "Asia/Tokyo"


def test_offsets_are_kept_in_whole_minutes_within_a_day():
    from ingestion.processing import utc_offset_min

    assert utc_offset_min(timedelta(hours=5, minutes=45)) == 345
    assert utc_offset_min(-12600) == -210  # seconds, as some sources give them
    assert utc_offset_min(None) is None
    assert utc_offset_min(timedelta(days=2)) is None  # no place has it: kept out


# --- sign-up ------------------------------------------------------------------------------


def signup_data(username: str, **extra: str) -> dict[str, str]:
    return {
        "username": username,
        "email": f"{username}@example.com",
        "password1": "a long and unusual passphrase",
        "password2": "a long and unusual passphrase",
        **extra,
    }


def test_sign_up_keeps_the_browsers_zone(client):
    page = client.get("/signup/").content.decode()
    assert 'type="hidden" name="time_zone"' in page and "data-browser-time-zone" in page
    assert "sibling/time_zone.js" in page
    # The hidden field has no label of its own on the page.
    assert "Time zone" not in page
    response = client.post("/signup/", signup_data("ana", time_zone="America/Sao_Paulo"))
    assert response.status_code == 302
    user = get_user_model().objects.get(username="ana")
    assert person_of(user).time_zone == "America/Sao_Paulo"


@pytest.mark.parametrize("sent", [None, "", "Mars/Olympus_Mons", "localtime"])
def test_sign_up_without_a_usable_zone_takes_utc(client, sent):
    extra = {} if sent is None else {"time_zone": sent}
    response = client.post("/signup/", signup_data("bo", **extra))
    assert response.status_code == 302
    assert person_of(get_user_model().objects.get(username="bo")).time_zone == "UTC"


# --- every signed-in page -----------------------------------------------------------------


def test_pages_show_times_in_the_persons_zone_and_others_see_theirs(client):
    from ingestion.authentication import api_token_create

    user = UserFactory()
    zone_set(user, "Asia/Kolkata")
    api_token_create(user=user, name="phone")
    html = login(client, user).get("/settings/api-tokens/").content.decode()
    # Kolkata is UTC+05:30 all year.
    assert "+05:30" in html
    other = UserFactory()
    api_token_create(user=other, name="phone")
    html = login(client, other).get("/settings/api-tokens/").content.decode()
    assert "+05:30" not in html and "+00:00" in html
    # The zone does not leak to the next request of the same thread.
    assert timezone.get_current_timezone_name() == "UTC"


def test_a_zone_this_machine_does_not_know_shows_utc(client):
    from ingestion.authentication import api_token_create

    user = UserFactory()
    # Saved when this machine's tz database knew it (or by hand): pages still answer.
    zone_set(user, "Mars/Olympus_Mons")
    api_token_create(user=user, name="phone")
    response = login(client, user).get("/settings/api-tokens/")
    assert response.status_code == 200 and "+00:00" in response.content.decode()
    assert login(client, user).get(SETTINGS).status_code == 200


def test_the_middleware_only_reads_and_leaves_the_thread_in_utc(rf):
    from django.contrib.auth.models import AnonymousUser
    from django.http import HttpResponse

    from sibling.middleware import PersonTimeZoneMiddleware

    middleware = PersonTimeZoneMiddleware(
        lambda request: HttpResponse(timezone.get_current_timezone_name())
    )
    request = rf.get("/")
    request.user = UserFactory()
    # No settings row yet: UTC, and none is made (a request racing an erasure must not bring
    # one back).
    assert middleware(request).content == b"UTC"
    assert Person.objects.count() == 0
    zone_set(request.user, "Asia/Tokyo")
    assert middleware(request).content == b"Asia/Tokyo"
    assert timezone.get_current_timezone_name() == "UTC"
    request.user = AnonymousUser()
    assert middleware(request).content == b"UTC"


# --- the sleep form -----------------------------------------------------------------------


def test_the_sleep_form_reads_times_in_the_persons_zone(client):
    user = UserFactory()
    zone_set(user, "America/New_York")
    zone = ZoneInfo("America/New_York")
    page = login(client, user).get("/my-data/").content.decode()
    assert "in your time zone (America/New_York)" in page
    # Last night, on the person's clock.
    day = (timezone.now().astimezone(zone) - timedelta(days=1)).date()
    start = datetime(day.year, day.month, day.day, 0, 30)
    end = start + timedelta(hours=7)
    client.post(
        "/my-data/",
        {
            "entry": "sleep_log",
            "sleep_log-start": start.strftime("%Y-%m-%dT%H:%M"),
            "sleep_log-end": end.strftime("%Y-%m-%dT%H:%M"),
        },
    )
    [document] = records_collection("volunteered_data").find({"user": user.pk})
    data = record_decode(document, owner_id=user.pk)["data"]
    offset = start.replace(tzinfo=zone).utcoffset()
    assert data["start"] == start.replace(tzinfo=zone).astimezone(UTC)
    assert data["end"] == end.replace(tzinfo=zone).astimezone(UTC)
    assert data["utc_offset_min"] == offset.total_seconds() // 60 in (-300, -240)
    assert document["occurred_at"] == data["start"]


def test_a_local_time_the_clock_skips_is_refused_naming_the_zone(client):
    user = UserFactory()
    zone_set(user, PARIS)
    # 29 March 2026: Paris clocks go from 02:00 to 03:00.
    response = login(client, user).post(
        "/my-data/",
        {
            "entry": "sleep_log",
            "sleep_log-start": "2026-03-29T02:30",
            "sleep_log-end": "2026-03-29T08:00",
        },
    )
    assert response.status_code == 400
    [error] = response.context["forms"]["sleep_log"].errors["start"]
    assert PARIS in error
    assert list(records_collection("volunteered_data").find({"user": user.pk})) == []


# --- the export ---------------------------------------------------------------------------


def test_the_export_writes_times_in_the_persons_zone_with_their_offset():
    from ingestion.events import events_accept

    user = UserFactory()
    zone_set(user, "Australia/Adelaide")
    start = datetime(2026, 1, 10, 13, 0, tzinfo=UTC)
    result = events_accept(
        user=user,
        events=[
            {
                "id": "sleep-1",
                "kind": "sleep_log",
                "occurred_at": start.isoformat(),
                "data": {
                    "start": start.isoformat(),
                    "end": (start + timedelta(hours=8)).isoformat(),
                },
            }
        ],
    )
    assert result.accepted == 1, result
    archive = zipfile.ZipFile(io.BytesIO(b"".join(export_stream(user=user))))
    [record] = [json.loads(line) for line in archive.read("volunteered_data.jsonl").splitlines()]
    # Adelaide keeps summer time in January: UTC+10:30.
    assert record["occurred_at"] == "2026-01-10T23:30:00+10:30"
    assert record["data"]["start"] == "2026-01-10T23:30:00+10:30"
    assert record["data"]["end"] == "2026-01-11T07:30:00+10:30"
    assert datetime.fromisoformat(record["data"]["start"]) == start  # the same instant
    readme = archive.read("README.txt").decode()
    assert "your time zone, Australia/Adelaide" in readme
    # Records stored before the offset moved to minutes keep it in seconds: the file says so.
    assert "utc_offset_min" in readme and "schema_version 1" in readme and "utc_offset_s" in readme


# --- in a real browser --------------------------------------------------------------------

NEWFOUNDLAND = "America/St_Johns"  # UTC-03:30 in winter, -02:30 in summer: no whole hour


@pytest.mark.django_db(transaction=True)
def test_a_browser_in_newfoundland_signs_up_and_sees_its_own_times(browser, live_server):  # noqa: F811
    from playwright.sync_api import expect

    from ingestion.authentication import api_token_create
    from ingestion.models import ApiToken
    from tests.sources.test_browser import csp_violations

    context = browser.new_context(timezone_id=NEWFOUNDLAND)
    violations = csp_violations(context)
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.goto(f"{live_server.url}/signup/")
    # What the browser itself calls its zone (chromium may use an older alias of a name).
    browser_zone = page.evaluate("Intl.DateTimeFormat().resolvedOptions().timeZone")
    page.get_by_label("Username").fill("wren")
    page.get_by_label("Email").fill("wren@example.com")
    page.get_by_label("Password:", exact=True).fill("a long and unusual passphrase")
    page.get_by_label("Password confirmation").fill("a long and unusual passphrase")
    page.get_by_role("button", name="Sign up").click()
    expect(page.get_by_role("heading", name="Connections")).to_be_visible()

    user = get_user_model().objects.get(username="wren")
    stored_zone = person_of(user).time_zone
    assert stored_zone == browser_zone
    assert ZoneInfo(stored_zone).utcoffset(datetime(2026, 1, 15)) == -timedelta(hours=3.5)

    # A page with times shows them on the person's clock.
    api_token_create(user=user, name="phone")
    created = ApiToken.objects.get(user=user).created_at.astimezone(ZoneInfo(stored_zone))
    page.goto(f"{live_server.url}/settings/api-tokens/")
    shown = page.locator("dd time").first
    expect(shown).to_have_text(f"{created.day} {created:%b %Y, %H:%M}")
    stamp = shown.get_attribute("datetime")
    assert stamp.endswith("-03:30") and datetime.fromisoformat(stamp) == created

    # Settings: the zone is selected, the browser's offered, another one chosen and kept.
    offer = f"Use this browser\u2019s time zone ({browser_zone})"
    page.get_by_role("link", name="Settings").click()
    expect(page.get_by_label("Time zone")).to_have_value(stored_zone)
    expect(page.get_by_role("button", name=offer)).to_be_visible()
    page.get_by_label("Time zone").select_option("Asia/Tokyo")
    page.get_by_label("Email me when a connection needs me").uncheck()
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Saved. Times are shown in Asia/Tokyo.")).to_be_visible()
    person = person_of(user)
    assert (person.time_zone, person.alert_emails) == ("Asia/Tokyo", False)
    page.get_by_role("button", name=offer).click()
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text(f"Saved. Times are shown in {browser_zone}.")).to_be_visible()
    context.close()
    # The zone came from a static script: nothing the Content-Security-Policy blocked.
    assert violations == []
