"""In a real browser (Debian's chromium driven by Playwright): a new person signs up, connects
Fitbit through the sandbox's consent page, and sees the connection active; a view-only staff
member walks admin and is offered nothing to change."""

import os
import re
import shutil

import pytest
from playwright.sync_api import expect, sync_playwright

from sources.models import UserDataSource
from tests.factories import STAFF_VIEW_PERMISSIONS, StaffFactory, UserDataSourceFactory

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags chromium keeps dialling hosts this machine cannot reach.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def browser(monkeypatch):
    assert shutil.which(CHROMIUM), f"{CHROMIUM} is missing: `make test` installs Debian's chromium"
    # Playwright's sync API keeps an event loop running in this thread, and Django refuses ORM
    # calls beside a running loop; the test's own ORM calls are synchronous, so that is safe here.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.mark.django_db(transaction=True)
def test_new_person_signs_up_connects_fitbit_and_sees_it_active(browser, sandbox, tmp_path):
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{sandbox.url}/signup/")
    page.set_default_timeout(15_000)
    page.get_by_label("Username").fill("lin")
    page.get_by_label("Email").fill("lin@example.com")
    page.get_by_label("Password:", exact=True).fill("a long and unusual passphrase")
    page.get_by_label("Password confirmation").fill("a long and unusual passphrase")
    page.get_by_role("button", name="Sign up").click()
    expect(page.get_by_role("heading", name="Connections")).to_be_visible()

    fitbit = page.locator("li.card[data-provider=fitbit]")
    fitbit.get_by_role("button", name=re.compile("Connect")).click()
    # The sandbox's consent page, as Google's would be.
    expect(page.get_by_role("button", name="Allow")).to_be_visible()
    page.get_by_role("button", name="Allow").click()

    expect(page.get_by_text("Fitbit is connected")).to_be_visible()
    connection = page.locator("li.card[data-provider=fitbit] section.connection")
    expect(connection).to_have_attribute("data-status", "active")
    expect(connection.locator(".badge.sandbox")).to_have_text("Sandbox")
    page.screenshot(path=str(tmp_path / "connections.png"), full_page=True)
    context.close()

    stored = UserDataSource.objects.get(user__username="lin", provider="fitbit")
    assert stored.status == UserDataSource.Status.ACTIVE


@pytest.mark.django_db(transaction=True)
def test_view_only_staff_member_walks_admin_and_is_offered_no_action(browser, live_server):
    connection = UserDataSourceFactory()
    StaffFactory(username="vera", permissions=STAFF_VIEW_PERMISSIONS)
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.goto(f"{live_server.url}/admin/login/")
    page.get_by_label("Username").fill("vera")
    page.get_by_label("Password").fill("correct horse battery staple")
    page.get_by_role("button", name="Log in").click()

    page.locator("#content-main").get_by_role("link", name="Connections", exact=True).click()
    expect(page.locator("#result_list tbody tr")).to_have_count(1)
    # Without the sync and disconnect permissions Django offers no action at all.
    expect(page.locator("select[name=action]")).to_have_count(0)
    expect(page.get_by_text("Sync now")).to_have_count(0)

    page.locator("#result_list tbody a").first.click()
    expect(page.get_by_role("heading", name="View connection")).to_be_visible()
    expect(page).to_have_url(re.compile(f"/{connection.pk}/change/$"))
    expect(page.locator("#userdatasource_form input[type=text]")).to_have_count(0)
    expect(page.locator("input[name=_save]")).to_have_count(0)

    page.goto(f"{live_server.url}/admin/")
    page.get_by_role("link", name="Sync health").click()
    expect(page.get_by_role("heading", name="Connections by status")).to_be_visible()
    context.close()
