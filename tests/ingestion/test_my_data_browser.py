"""My data in a real browser (Debian's chromium driven by Playwright): a person with several
sources sees the day-by-day summary, a chart per measure and their records paged, on their own
clock; another person sees none of it; nothing the Content-Security-Policy blocks."""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from playwright.sync_api import expect

from tests.ingestion.test_my_data import store, zone_set
from tests.sources.conftest import PASSWORD
from tests.sources.test_browser import browser, csp_violations  # noqa: F401 (a fixture)

TOKYO = "Asia/Tokyo"  # UTC+9 all year: its days never match UTC's


def log_in(browser, live_server, username):  # noqa: F811 (the fixture's value)
    context = browser.new_context()
    violations = csp_violations(context)
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.goto(f"{live_server.url}/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name=re.compile("Log in", re.I)).click()
    expect(page.get_by_role("heading", name="Connections")).to_be_visible()
    return context, page, violations


@pytest.mark.django_db(transaction=True)
def test_a_person_reads_their_summary_charts_and_pages_of_records(
    browser,  # noqa: F811
    live_server,
    tmp_path,
):
    users = get_user_model().objects
    person = users.create_user("ada", "ada@example.com", PASSWORD)
    users.create_user("bo", "bo@example.com", PASSWORD)
    zone_set(person, TOKYO)
    zone = ZoneInfo(TOKYO)
    today = timezone.now().astimezone(zone).date()
    d1, d2 = today - timedelta(days=1), today - timedelta(days=2)

    def at(day, hour, minute=0):
        return datetime.combine(day, time(hour, minute), tzinfo=zone).astimezone(UTC)

    # Several sources: a wearable's nights and steps, a bank, and entries of the person's own.
    store(person, "sleep_session", at(d2, 23), start=at(d2, 23), end=at(d1, 6), minutes_asleep=390)
    for day, steps in ((d2, 4000), (d1, 8000)):
        store(person, "activity_day", at(day, 0), date=day.isoformat(), steps=steps)
    store(
        person,
        "transaction",
        at(d1, 0),
        transaction_id="t-1",
        account_id="a-1",
        date=d1.isoformat(),
        amount=24.5,
        currency="EUR",
        name="Bakery",
        pending=False,
    )
    # Rated at 07:15 in Tokyo, which is the day before in UTC.
    store(person, "mood_rating", at(d1, 7, 15), rating=4, note="rested")
    now = timezone.now()
    for n in range(15):
        store(person, "note", now - timedelta(minutes=n), text=f"note number {n}")

    context, page, violations = log_in(browser, live_server, "ada")
    page.get_by_role("link", name="My data").click()
    expect(page.get_by_role("heading", name="My data", exact=True)).to_be_visible()
    expect(page.locator("#zone-name")).to_have_text(TOKYO)

    # The summary leads: yesterday's figures from each source, as text.
    summary = page.locator("#summary-table")
    expect(summary.get_by_role("columnheader")).to_have_text(
        ["Day", "Sleep", "Steps", "Spending (EUR)", "Mood"]
    )
    yesterday = summary.locator(f'tr[data-day="{d1}"]')
    expect(yesterday.locator("th")).to_have_text("Yesterday")
    expect(yesterday.locator("td")).to_have_text(["6 h 30 min", "8,000", "24.50 EUR", "4.0 of 5"])

    # A chart per measure, drawn from the stylesheet (no inline style), each bar a day.
    charts = page.locator("#charts svg.chart")
    expect(charts).to_have_count(4)
    steps = page.locator('#charts li[data-measure="steps"]')
    expect(steps.locator("rect")).to_have_count(2)
    expect(steps.locator(f'rect[data-day="{d1}"] title')).to_have_text(
        f"{d1:%a} {d1.day} {d1:%b}: 8,000"
    )
    heights = [
        float(steps.locator(f'rect[data-day="{day}"]').get_attribute("height")) for day in (d2, d1)
    ]
    assert heights == [50, 100]
    assert steps.locator("svg").evaluate("(svg) => getComputedStyle(svg).display") == "block"
    assert steps.locator("rect").first.evaluate("(r) => getComputedStyle(r).fill") != "rgb(0, 0, 0)"
    steps.get_by_text("Show the numbers").click()
    expect(steps.locator(f'tr[data-day="{d1}"] td.num')).to_have_text("8,000")

    # Times on the person's clock: the mood was rated at 07:15 in Tokyo.
    moods = page.locator('#records-mood_rating table[data-kind="mood_rating"]')
    expect(moods.locator("time")).to_have_text(f"{d1} 07:15")

    # Records paged, newest first.
    notes = page.locator("#records-note")
    expect(notes.locator("caption")).to_have_text("Note: 1 to 10 of 15, newest first")
    expect(notes.locator("tbody tr").first).to_contain_text("note number 0")
    notes.get_by_role("link", name="Older").click()
    expect(page).to_have_url(re.compile(r"note_page=2#records-note$"))
    notes = page.locator("#records-note")
    expect(notes.locator("caption")).to_have_text("Note: 11 to 15 of 15, newest first")
    expect(notes.get_by_text("Page 2 of 2")).to_be_visible()
    expect(notes.locator("tbody tr")).to_have_count(5)
    expect(notes.locator("tbody tr").last).to_contain_text("note number 14")
    expect(notes.get_by_role("link", name="Older")).to_have_count(0)
    notes.get_by_role("link", name="Newer").click()
    expect(page.locator("#records-note caption")).to_have_text("Note: 1 to 10 of 15, newest first")
    page.screenshot(path=str(tmp_path / "my-data.png"), full_page=True)
    context.close()
    assert violations == []

    # Someone else sees none of it, whatever page they ask for.
    other, page, other_violations = log_in(browser, live_server, "bo")
    page.goto(f"{live_server.url}/my-data/?note_page=2&mood_rating_page=1")
    expect(page.get_by_text("Nothing to sum up")).to_be_visible()
    expect(page.locator("svg.chart")).to_have_count(0)
    expect(page.locator("#latest table")).to_have_count(0)
    expect(page.get_by_text("note number")).to_have_count(0)
    expect(page.get_by_text("rested")).to_have_count(0)
    other.close()
    assert other_violations == []
