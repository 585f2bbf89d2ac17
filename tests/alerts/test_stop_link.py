"""The signed "stop these emails" link: as the person (signed in or not), as their mail client's
one-click unsubscribe (RFC 8058), and as an attacker forging or altering links."""

import pytest
from django.core import mail, signing
from django.test import Client

from alerts import services
from alerts.views import LINK_INVALID, LINK_UNKNOWN
from ingestion.notifications import connection_notice
from sibling.models import Person
from sibling.people import person_of
from sources.signals import EXPIRING
from tests.factories import UserDataSourceFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)
TEXT = "Your provider will soon stop sharing data with Sibling. Reconnect to keep it current."


@pytest.fixture
def person(db):
    return UserFactory()


def stop_path(person) -> str:
    return f"/alerts/stop/{services.emails_stop_token(person_of(person))}/"


def alerts_on(person) -> bool:
    return Person.objects.get(user=person).alert_emails


def test_the_link_in_the_email_asks_then_one_click_stops_the_emails(person, settings):
    connection = UserDataSourceFactory(user=person)
    connection_notice(connection, TEXT, change=EXPIRING)
    assert len(mail.outbox) == 1
    url = mail.outbox[0].extra_headers["List-Unsubscribe"].strip("<>")
    path = url.removeprefix(settings.SIBLING_PUBLIC_URL)

    anonymous = Client(enforce_csrf_checks=True)
    page = anonymous.get(path)
    assert page.status_code == 200
    assert b"Stop these emails" in page.content
    assert alerts_on(person)  # opening the link (or a scanner following it) changes nothing

    done = anonymous.post(path)
    assert done.status_code == 200 and b"Alert emails stopped" in done.content
    assert not alerts_on(person)
    again = anonymous.get(path)
    assert b"already off" in again.content

    # The next incident is recorded, and nobody is emailed.
    other = UserDataSourceFactory(user=person)
    connection_notice(other, TEXT, change=EXPIRING)
    assert len(mail.outbox) == 1


def test_a_mail_clients_one_click_post_needs_no_cookie(person):
    client = Client(enforce_csrf_checks=True)
    answer = client.post(
        stop_path(person),
        "List-Unsubscribe=One-Click",
        content_type="application/x-www-form-urlencoded",
    )
    assert answer.status_code == 200
    assert not alerts_on(person)


def test_the_link_only_ever_stops_its_own_persons_emails(person):
    other = UserFactory()
    person_of(other)
    Client().post(stop_path(person))
    assert not alerts_on(person) and alerts_on(other)


@pytest.mark.parametrize(
    "token",
    [
        "nonsense",
        "a" * 2000,
        "eyJwIjoiMTIzIn0:1vPqrs:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "%C3%A9t%C3%A9",
        "<img src=x onerror=alert(1)>",
    ],
)
def test_a_forged_link_is_refused_with_a_clear_page(person, token):
    person_of(person)
    for method in ("get", "post"):
        answer = getattr(Client(), method)(f"/alerts/stop/{token}/")
        assert answer.status_code == 400
        assert LINK_INVALID.encode() in answer.content
        assert b"<img" not in answer.content
    assert alerts_on(person)


def test_an_altered_link_is_refused(person):
    token = services.emails_stop_token(person_of(person))
    value, rest = token.split(":", 1)
    other = UserFactory()
    # Another person's id put into a genuine link, and one character of the signature changed.
    forged_value = signing.b64_encode(f'{{"p":"{person_of(other).pk}"}}'.encode()).decode()
    swapped = rest[:-1] + ("A" if rest[-1] != "A" else "B")
    for bad in (f"{forged_value}:{rest}", f"{value}:{swapped}", token[:-3]):
        answer = Client().post(f"/alerts/stop/{bad}/")
        assert answer.status_code == 400, bad
    # Signed with the site's key but for another purpose (another salt): refused too.
    elsewhere = signing.dumps({"p": str(person_of(person).pk)})
    assert Client().post(f"/alerts/stop/{elsewhere}/").status_code == 400
    assert alerts_on(person) and alerts_on(other)


def test_a_link_whose_person_is_gone_says_so(person):
    path = stop_path(person)
    person.delete()
    answer = Client().post(path)
    assert answer.status_code == 404
    assert LINK_UNKNOWN.encode() in answer.content


def test_only_get_and_post(person):
    assert Client().put(stop_path(person)).status_code == 405


def test_a_signed_value_of_the_wrong_shape_is_refused_too(person):
    # Only Sibling can sign, but a value it never makes must still get the clear page.
    for value in ({"p": "123"}, {"p": 5}, ["p"], "p", {"q": str(person_of(person).pk)}):
        token = signing.dumps(value, salt=services.STOP_SALT)
        assert Client().post(f"/alerts/stop/{token}/").status_code == 400
    nobody = signing.dumps({"p": "0" * 24}, salt=services.STOP_SALT)
    assert Client().post(f"/alerts/stop/{nobody}/").status_code == 404
    assert alerts_on(person)


def test_switched_off_on_the_settings_page_then_on_again(person):
    browser = Client()
    browser.force_login(person)
    off = browser.post("/settings/", {"time_zone": "UTC"})  # the box left unticked
    assert off.status_code == 302 and not alerts_on(person)
    connection = UserDataSourceFactory(user=person)
    connection_notice(connection, TEXT, change=EXPIRING)
    assert not mail.outbox

    browser.post("/settings/", {"time_zone": "UTC", "alert_emails": "on"})
    assert alerts_on(person)
    other = UserDataSourceFactory(user=person)
    connection_notice(other, TEXT, change=EXPIRING)
    assert len(mail.outbox) == 1
    # The email links to the page where it was switched back on.
    assert "/settings/" in mail.outbox[0].body
