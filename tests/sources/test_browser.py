"""In a real browser (Debian's chromium driven by Playwright): a new person signs up, connects
every registered source through the sandbox, and sees each connection active; a view-only staff
member walks admin and is offered nothing to change."""

import os
import re
import shutil

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import expect, sync_playwright

from ingestion.runner import connection_sync
from sources.models import UserDataSource
from sources.providers import PROVIDERS
from tests.factories import STAFF_VIEW_PERMISSIONS, StaffFactory, UserDataSourceFactory
from tests.ingestion.conftest import NO_WAIT
from tests.sources.conftest import PASSWORD
from tests.sources.providers.kit import hooks, provider_for

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


def csp_violations(context):
    """Every Content-Security-Policy violation in the context's pages, as it happens: the
    `securitypolicyviolation` events and chromium's console reports of blocked content."""
    seen: list[str] = []
    context.expose_binding("__cspViolation", lambda source, text: seen.append(text))
    context.add_init_script(
        'document.addEventListener("securitypolicyviolation", (e) => window.__cspViolation('
        '`${e.effectiveDirective} blocked ${e.blockedURI || "inline"} on ${location.pathname}`));'
    )
    context.on(
        "console",
        lambda message: "Content Security Policy" in message.text and seen.append(message.text),
    )
    return seen


def connect_in_browser(page, provider) -> None:
    """Connect ``provider`` from the Connections page the way a person does (its auth mode's
    steps, from the provider's test hooks), and wait until its card shows the connection."""
    card = page.locator(f"li.card[data-provider={provider.id}]")
    hooks(provider.id).browser_connect(page, card)
    expect(page.get_by_role("heading", name="Connections")).to_be_visible()
    connection = page.locator(f"li.card[data-provider={provider.id}] section.connection")
    expect(connection).to_have_attribute("data-status", "active")
    expect(connection.locator(".badge.sandbox")).to_have_text("Sandbox")


@pytest.mark.django_db(transaction=True)
def test_new_person_signs_up_and_connects_every_source(browser, sandbox, tmp_path):
    context = browser.new_context()
    violations = csp_violations(context)
    page = context.new_page()
    page.goto(f"{sandbox.url}/signup/")
    page.set_default_timeout(15_000)
    page.get_by_label("Username").fill("lin")
    page.get_by_label("Email").fill("lin@example.com")
    page.get_by_label("Password:", exact=True).fill("a long and unusual passphrase")
    page.get_by_label("Password confirmation").fill("a long and unusual passphrase")
    page.get_by_role("button", name="Sign up").click()
    expect(page.get_by_role("heading", name="Connections")).to_be_visible()

    # Every registered source, each by its auth mode's steps: the sandbox's consent pages (as
    # the providers' would be), an API key form, a provider's hosted widget.
    for provider in PROVIDERS.values():
        connect_in_browser(page, provider)
    page.screenshot(path=str(tmp_path / "connections.png"), full_page=True)
    context.close()
    # The connect flows' form posts, their redirects to consent pages and back, the widget's
    # script and frame: all under the CSP.
    assert violations == []

    stored = UserDataSource.objects.filter(user__username="lin")
    assert sorted(c.provider for c in stored) == sorted(PROVIDERS)
    assert {c.status for c in stored} == {UserDataSource.Status.ACTIVE}


@pytest.mark.django_db(transaction=True)
def test_view_only_staff_member_walks_admin_and_is_offered_no_action(browser, live_server):
    connection = UserDataSourceFactory()
    StaffFactory(username="vera", permissions=STAFF_VIEW_PERMISSIONS)
    context = browser.new_context()
    violations = csp_violations(context)
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
    # Lists without actions carry Django admin's own inline <style>: allowed by the policy.
    assert violations == []


@pytest.mark.django_db(transaction=True)
def test_pages_admin_and_a_hosted_link_work_under_the_content_security_policy(
    browser, sandbox, settings
):
    """A person connects an account through a provider's hosted widget and walks their pages,
    a superuser walks admin (with its status badges, charts and forms), and the person deletes
    their data: nothing the Content-Security-Policy blocks on the way."""
    settings.SIBLING_BACKFILL_DAYS = 14
    users = get_user_model().objects
    person = users.create_user("noor", "noor@example.com", PASSWORD)
    users.create_superuser("root", "root@example.com", PASSWORD)
    context = browser.new_context()
    violations = csp_violations(context)
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.goto(f"{sandbox.url}/login/")
    page.get_by_label("Username").fill("noor")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()

    # The provider's widget (the sandbox's imitation of its script) opens, and the account
    # connects.
    provider = provider_for(auth_mode="hosted_link")
    connect_in_browser(page, provider)
    connection = UserDataSource.objects.get(user=person, provider=provider.id)
    connection_sync(connection.pk, policy=NO_WAIT)  # records for the charts and counts

    page.goto(f"{sandbox.url}/my-data/")
    # A chart per measure the person has (the bank's spending here), drawn as SVG.
    expect(page.locator("svg.chart rect").first).to_be_attached()
    for path, heading in (
        ("/settings/api-tokens/", "API tokens"),
        ("/settings/privacy/", "Your data"),
    ):
        page.goto(f"{sandbox.url}{path}")
        expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()

    staff = browser.new_context()
    staff_violations = csp_violations(staff)
    admin = staff.new_page()
    admin.set_default_timeout(15_000)
    admin.goto(f"{sandbox.url}/admin/login/")
    admin.get_by_label("Username").fill("root")
    admin.get_by_label("Password").fill(PASSWORD)
    admin.get_by_role("button", name="Log in").click()
    expect(admin.get_by_role("link", name="Sync health")).to_be_visible()
    for path in (
        "/admin/sources/userdatasource/",
        f"/admin/sources/userdatasource/{connection.pk}/change/",
        "/admin/ingestion/syncrun/",
        "/admin/ingestion/webhookevent/",
        "/admin/sync-health/",
        f"/admin/privacy/?q={person.email}",
        f"/admin/privacy/{person.pk}/",
    ):
        response = admin.goto(f"{sandbox.url}{path}")
        assert response is not None and response.ok, path
    staff.close()

    # Delete all my data asks for the password; a wrong one is a clear error.
    page.goto(f"{sandbox.url}/settings/privacy/")
    page.get_by_label('To confirm, type "delete my data"').fill("delete my data")
    page.get_by_label("Your password").fill("not my password")
    page.get_by_role("button", name="Delete all my data").click()
    expect(page.get_by_text("That is not your password. Nothing was deleted.")).to_be_visible()
    page.get_by_label('To confirm, type "delete my data"').fill("delete my data")
    page.get_by_label("Your password").fill(PASSWORD)
    page.get_by_role("button", name="Delete all my data").click()
    expect(page.get_by_role("heading", name="Your data was deleted")).to_be_visible()

    assert violations == []
    assert staff_violations == []
    # The recorder does see what the policy blocks: an inline script without the nonce.
    blocked = page.evaluate(
        """() => new Promise((resolve) => {
            document.addEventListener(
                "securitypolicyviolation", (e) => resolve(e.effectiveDirective), {once: true});
            const script = document.createElement("script");
            script.textContent = "1";
            document.body.appendChild(script);
        })"""
    )
    assert blocked.startswith("script-src")
    assert any("script-src" in v for v in violations), violations
    context.close()


@pytest.mark.django_db(transaction=True)
def test_a_connect_with_an_unticked_scope_is_explained_and_offered_again(browser, sandbox, person):
    from tests.sources.providers.kit import providers

    granular = [p for p in providers(auth_mode="oauth2") if hooks(p.id).granular_consent]
    if not granular:
        pytest.skip("no registered source has a granular consent page")
    provider = granular[0]
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.goto(f"{sandbox.url}/login/")
    page.get_by_label("Username").fill(person.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name=re.compile("Log in", re.I)).click()
    page.goto(f"{sandbox.url}/connections/")
    card = page.locator(f"li.card[data-provider={provider.id}]")
    # The person unticks every permission they can on the consent page.
    hooks(provider.id).browser_connect(page, card, untick=True)
    expect(page.get_by_role("heading", name="Connections")).to_be_visible()
    expect(page.locator(".messages")).to_contain_text("Missing:")
    assert not UserDataSource.objects.filter(user=person).exists()
    # Connect again, this time leaving every box ticked.
    again = card.get_by_role("button", name=re.compile("Connect again"))
    expect(again).to_be_visible()
    connect_in_browser(page, provider)
    context.close()


@pytest.mark.django_db(transaction=True)
def test_a_person_chooses_how_far_back_and_how_often_on_the_connect_steps_and_cards(
    browser, sandbox, person
):
    """The history window beside an OAuth2 card's Connect button and on a hosted link's page,
    before anything is fetched; then a card's schedule and window changed and saved."""
    oauth2 = provider_for(auth_mode="oauth2", backfill_fixed_at_connect=False)
    linked = provider_for(auth_mode="hosted_link")
    context = browser.new_context()
    violations = csp_violations(context)
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.goto(f"{sandbox.url}/login/")
    page.get_by_label("Username").fill(person.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name=re.compile("Log in", re.I)).click()
    page.goto(f"{sandbox.url}/connections/")

    card = page.locator(f"li.card[data-provider={oauth2.id}]")
    card.get_by_label("History to fetch").select_option(label="1 year")
    connect_in_browser(page, oauth2)
    connection = UserDataSource.objects.get(user=person, provider=oauth2.id)
    assert connection.backfill_days == 365

    card = page.locator(f"li.card[data-provider={linked.id}]")
    card.get_by_role("link", name=re.compile("Connect")).click()
    page.get_by_label("History to fetch").select_option(label="30 days")
    page.get_by_role("button", name=linked.link_button).click()
    hooks(linked.id).browser_widget(page.get_by_role("dialog"))
    expect(page.get_by_role("heading", name="Connections")).to_be_visible()
    assert UserDataSource.objects.get(user=person, provider=linked.id).backfill_days == 30

    # The first sync has fetched nothing yet (no worker runs here): the window may change.
    section = page.locator(f"li.card[data-provider={oauth2.id}] section.connection")
    section.get_by_label("History to fetch").select_option(label="30 days")
    section.get_by_role("button", name="Save history").click()
    expect(page.locator(".messages")).to_contain_text("first sync will fetch: 30 days")
    assert UserDataSource.objects.get(pk=connection.pk).backfill_days == 30

    longest = max(oauth2.sync_interval_choices)
    section = page.locator(f"li.card[data-provider={oauth2.id}] section.connection")
    section.get_by_label("Syncs").select_option(str(longest))
    section.get_by_role("button", name="Save schedule").click()
    expect(page.locator(".messages")).to_contain_text("now syncs")
    expect(section.get_by_label("Syncs")).to_have_value(str(longest))
    assert UserDataSource.objects.get(pk=connection.pk).sync_interval == longest

    # Once something is fetched, the card says how far back it went and offers no change.
    UserDataSource.objects.filter(pk=connection.pk).update(cursors={"a-stream": "x"})
    page.reload()
    section = page.locator(f"li.card[data-provider={oauth2.id}] section.connection")
    expect(section.get_by_role("button", name="Save history")).to_have_count(0)
    expect(section).to_contain_text("History fetched")
    context.close()
    assert violations == []
