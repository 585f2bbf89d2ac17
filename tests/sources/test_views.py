"""People's pages: sign up, Connections, actions; a person acts on their own connections only."""

from datetime import timedelta

import pytest
from bson import ObjectId
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from sources.models import PendingRevocation, UserDataSource
from sources.providers import PROVIDERS, providers_with
from tests.factories import UserDataSourceFactory, UserFactory

pytestmark = pytest.mark.django_db
Status = UserDataSource.Status
API_KEY = providers_with(auth_mode="api_key")
HOSTED_LINK = providers_with(auth_mode="hosted_link")
OAUTH2 = providers_with(auth_mode="oauth2")


def _ids(provider) -> str:
    return provider.id


def test_sign_up_signs_in_and_shows_every_registered_source(client):
    response = client.post(
        reverse("signup"),
        {
            "username": "ada",
            "email": "Ada@Example.com",
            "password1": "a long and unusual passphrase",
            "password2": "a long and unusual passphrase",
        },
        follow=True,
    )
    assert response.redirect_chain[-1][0] == reverse("sources:connections")
    assert get_user_model().objects.get(username="ada").email == "ada@example.com"
    page = response.content.decode()
    for provider in PROVIDERS.values():
        assert escape(provider.name) in page
        assert f'data-provider="{provider.id}"' in page
    assert page.count("Not connected.") == len(PROVIDERS)


def test_pages_need_a_signed_in_person(client):
    response = client.get(reverse("sources:connections"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_log_in_and_out(client):
    UserFactory(username="grace")
    response = client.post(
        reverse("login"), {"username": "grace", "password": "correct horse battery staple"}
    )
    assert response.status_code == 302
    assert client.get(reverse("sources:connections")).status_code == 200
    client.post(reverse("logout"))
    assert client.get(reverse("sources:connections")).status_code == 302


def test_card_shows_status_counts_next_sync_and_actions(signed_in, person):
    connection = UserDataSourceFactory(user=person, records_stored=1234, sandbox=True)
    page = signed_in.get(reverse("sources:connections")).content.decode()
    assert "1234" in page and "Sandbox" in page
    for action in ("sync", "pause"):
        assert reverse("sources:action", args=[connection.pk, action]) in page
    assert reverse("sources:disconnect", args=[connection.pk]) in page


@pytest.mark.parametrize("provider", list(PROVIDERS.values()), ids=_ids)
def test_reauth_is_explained_in_plain_language(signed_in, person, provider):
    UserDataSourceFactory(
        user=person, provider=provider.id, status=Status.REAUTH_REQUIRED, account_label="Mine"
    )
    page = signed_in.get(reverse("sources:connections")).content.decode()
    assert escape(provider.reauth_message) in page
    assert "Reconnect" in page


def test_pause_resume_and_sync_now(signed_in, person):
    connection = UserDataSourceFactory(user=person, next_sync_at=None)
    signed_in.post(reverse("sources:action", args=[connection.pk, "pause"]))
    connection.refresh_from_db()
    assert connection.status == Status.PAUSED
    signed_in.post(reverse("sources:action", args=[connection.pk, "resume"]))
    connection.refresh_from_db()
    assert connection.status == Status.ACTIVE and connection.next_sync_at is not None
    connection.next_sync_at = None
    connection.save()
    signed_in.post(reverse("sources:action", args=[connection.pk, "sync"]))
    connection.refresh_from_db()
    assert connection.next_sync_at is not None


@pytest.mark.parametrize(
    ("method", "url_name", "args"),
    [
        ("get", "sources:disconnect", []),
        ("post", "sources:disconnect", []),
        ("post", "sources:action", ["pause"]),
        ("post", "sources:action", ["sync"]),
    ],
)
def test_another_persons_connection_is_not_found(signed_in, method, url_name, args):
    theirs = UserDataSourceFactory(user=UserFactory())
    url = reverse(url_name, args=[theirs.pk, *args])
    response = getattr(signed_in, method)(url, {"data": "delete"})
    assert response.status_code == 404
    theirs.refresh_from_db()
    assert theirs.status == Status.ACTIVE


@pytest.mark.parametrize("bad_id", ["not-an-id", str(ObjectId())])
def test_unknown_connection_ids_are_not_found(signed_in, bad_id):
    assert signed_in.get(reverse("sources:disconnect", args=[bad_id])).status_code == 404


def test_unknown_action_is_not_found(signed_in, person):
    connection = UserDataSourceFactory(user=person)
    response = signed_in.post(reverse("sources:action", args=[connection.pk, "explode"]))
    assert response.status_code == 404


def test_every_form_needs_the_csrf_token(person):
    client = Client(enforce_csrf_checks=True)
    client.force_login(person, backend="django.contrib.auth.backends.ModelBackend")
    connection = UserDataSourceFactory(user=person)
    urls = [
        reverse("sources:action", args=[connection.pk, "pause"]),
        reverse("sources:disconnect", args=[connection.pk]),
    ]
    for provider in PROVIDERS.values():
        urls.append(reverse("sources:connect", args=[provider.id]))
    for provider in HOSTED_LINK:
        urls.append(reverse("sources:link_token", args=[provider.id]))
        urls.append(reverse("sources:link_exchange", args=[provider.id]))
    for provider in OAUTH2:
        urls.append(reverse("social:begin", args=[provider.id]))
    for url in urls:
        assert client.post(url, {"data": "delete"}).status_code == 403, url
    connection.refresh_from_db()
    assert connection.status == Status.ACTIVE


def test_actions_need_post(signed_in, person):
    connection = UserDataSourceFactory(user=person)
    response = signed_in.get(reverse("sources:action", args=[connection.pk, "pause"]))
    assert response.status_code == 405


def test_a_connection_stopped_by_failures_says_why(signed_in, person):
    UserDataSourceFactory(
        user=person, status=Status.ERROR, last_error="The provider answered 503", next_sync_at=None
    )
    page = signed_in.get(reverse("sources:connections")).content.decode()
    assert "so it has stopped" in page and "The provider answered 503" in page
    assert "Reconnect" in page


def _pending(person, connection=None, **fields) -> PendingRevocation:
    defaults = {
        "attempts": 1,
        "next_attempt_at": timezone.now() + timedelta(minutes=5),
        "last_error": "503 temporarily_unavailable",
    }
    return PendingRevocation.objects.create(
        user=person,
        connection=connection,
        provider=connection.provider if connection else OAUTH2[0].id,
        token="1//0-secret-refresh-token",
        token_type_hint="refresh_token",
        **{**defaults, **fields},
    )


@pytest.mark.parametrize("provider", list(PROVIDERS.values()), ids=_ids)
def test_connections_warn_while_a_revocation_is_not_confirmed(signed_in, person, provider):
    connection = UserDataSourceFactory(
        user=person, provider=provider.id, status=Status.DISCONNECTED, account_label="My bank"
    )
    _pending(person, connection)
    page = signed_in.get(reverse("sources:connections")).content.decode()
    assert f"Waiting for {escape(provider.name)}." in page
    assert "You disconnected My bank" in page and "has not confirmed yet" in page
    # The last error is for staff; "503" alone may occur by chance in an ObjectId or a token.
    assert "1//0-secret-refresh-token" not in page and "temporarily_unavailable" not in page


def test_connections_say_when_sibling_gave_up_asking(signed_in, person):
    UserDataSourceFactory(user=person)  # connecting is what creates the person's data key
    _pending(person, state=PendingRevocation.State.GAVE_UP, next_attempt_at=None)
    page = signed_in.get(reverse("sources:connections")).content.decode()
    assert "Access not confirmed withdrawn." in page
    assert (
        f"Please remove Sibling's access in your account settings at {escape(OAUTH2[0].name)}."
        in page
    )


def test_another_persons_pending_revocation_is_not_shown(signed_in, person):
    other = UserFactory()
    UserDataSourceFactory(user=other)  # their data key
    _pending(other)
    page = signed_in.get(reverse("sources:connections")).content.decode()
    assert "Waiting for" not in page and "not confirmed" not in page


def test_the_disconnect_page_mentions_an_earlier_unconfirmed_revocation(signed_in, person):
    connection = UserDataSourceFactory(
        user=person, provider=OAUTH2[0].id, status=Status.DISCONNECTED
    )
    _pending(person, connection)
    page = signed_in.get(reverse("sources:disconnect", args=[connection.pk])).content.decode()
    assert "has not confirmed yet that Sibling's access from an earlier disconnect" in page


# --- Connecting, per auth mode ---


def _connect(provider) -> str:
    return reverse("sources:connect", args=[provider.id])


@pytest.mark.parametrize("provider", list(PROVIDERS.values()), ids=_ids)
def test_each_card_offers_the_connect_step_of_its_auth_mode(signed_in, provider):
    page = signed_in.get(reverse("sources:connections")).content.decode()
    if provider.auth_mode == "oauth2":
        assert f'action="{reverse("social:begin", args=[provider.id])}"' in page
    else:
        assert f'href="{_connect(provider)}"' in page


@pytest.mark.parametrize("provider", API_KEY, ids=_ids)
def test_the_key_page_asks_for_the_providers_key(signed_in, provider):
    response = signed_in.get(_connect(provider))
    assert response.status_code == 200
    page = response.content.decode()
    assert f"<h1>Connect {escape(provider.name)}</h1>" in page
    assert escape(provider.key_help) in page and 'name="api_key"' in page
    assert 'type="password"' in page  # the key is not shown back


@pytest.mark.parametrize("provider", API_KEY, ids=_ids)
def test_a_person_connects_with_a_key_the_provider_accepts(signed_in, person, sandbox, provider):
    refused = signed_in.post(_connect(provider), {"api_key": "not-a-real-key"})
    assert refused.status_code == 200
    assert f"{escape(provider.name)} did not accept this key" in refused.content.decode()
    assert not UserDataSource.objects.filter(user=person).exists()

    key = "sandbox-a-key-of-mine"  # the sandbox's convention for a key it accepts
    answer = signed_in.post(_connect(provider), {"api_key": key}, follow=True)
    assert answer.redirect_chain[-1][0] == reverse("sources:connections")
    assert f"{escape(provider.name)} is connected." in answer.content.decode()
    connection = UserDataSource.objects.get(user=person, provider=provider.id)
    assert connection.credentials == {"api_key": key}
    assert connection.external_account_id == provider.external_account_id_for_key(key)
    assert connection.account_label == (provider.account_label or f"{provider.name} account")
    assert key not in connection.external_account_id


@pytest.mark.parametrize("provider", API_KEY, ids=_ids)
def test_a_key_the_provider_cannot_check_is_a_clear_error(signed_in, person, settings, provider):
    settings.SIBLING_SANDBOX_BASE_URL = "http://127.0.0.1:9/sandbox"  # nothing listens there
    response = signed_in.post(_connect(provider), {"api_key": "sandbox-unchecked"})
    assert response.status_code == 200 and 'role="alert"' in response.content.decode()
    assert not UserDataSource.objects.filter(user=person).exists()


@pytest.mark.parametrize("provider", HOSTED_LINK, ids=_ids)
def test_the_link_page_loads_the_providers_script_and_names_its_global(signed_in, provider):
    response = signed_in.get(_connect(provider))
    assert response.status_code == 200
    page = response.content.decode()
    assert f'<script src="{escape(provider.url("link_script"))}"></script>' in page
    assert f'data-link-global="{escape(provider.link_global)}"' in page
    assert f'data-token-url="{reverse("sources:link_token", args=[provider.id])}"' in page
    assert f'data-exchange-url="{reverse("sources:link_exchange", args=[provider.id])}"' in page
    assert provider.link_global and escape(provider.link_button) in page


@pytest.mark.parametrize("provider", HOSTED_LINK, ids=_ids)
def test_a_link_token_is_made_for_the_signed_in_person(signed_in, sandbox, provider):
    answer = signed_in.post(reverse("sources:link_token", args=[provider.id]))
    assert answer.status_code == 200 and answer.json()["link_token"]


@pytest.mark.parametrize("provider", HOSTED_LINK, ids=_ids)
def test_the_link_steps_answer_json_errors_when_the_provider_is_unreachable(
    signed_in, person, settings, provider
):
    settings.SIBLING_SANDBOX_BASE_URL = "http://127.0.0.1:9/sandbox"  # nothing listens there
    for name, body in (
        ("sources:link_token", {}),
        ("sources:link_exchange", {"public_token": "public-sandbox-x", "metadata": {}}),
    ):
        answer = signed_in.post(
            reverse(name, args=[provider.id]), body, content_type="application/json"
        )
        assert answer.status_code == 502 and answer.json()["error"], name
    assert not UserDataSource.objects.filter(user=person).exists()


@pytest.mark.parametrize("provider", OAUTH2, ids=_ids)
def test_an_oauth2_connect_goes_to_the_begin_step(signed_in, provider):
    begin = reverse("social:begin", args=[provider.id])
    got = signed_in.get(_connect(provider))
    assert got.status_code == 302 and got["Location"] == begin
    posted = signed_in.post(_connect(provider))
    assert posted.status_code == 307 and posted["Location"] == begin  # still a POST there


def test_the_connect_steps_need_a_signed_in_person(client):
    for provider in PROVIDERS.values():
        response = client.get(_connect(provider))
        assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    for provider in HOSTED_LINK:
        for name in ("sources:link_token", "sources:link_exchange"):
            response = client.post(reverse(name, args=[provider.id]))
            assert response.status_code == 302, name
    assert not UserDataSource.objects.exists()


# --- An attacker's requests: a clear refusal, never a 500 ---


@pytest.mark.parametrize(
    "provider_id", ["no-such-source", "NEW", "..", "%00", "x" * 300, "connections"]
)
@pytest.mark.parametrize("name", ["sources:connect", "sources:link_token", "sources:link_exchange"])
def test_an_unknown_provider_is_not_found(signed_in, name, provider_id):
    url = reverse(name, args=[provider_id])
    assert signed_in.get(url).status_code in (404, 405)
    assert signed_in.post(url, {"api_key": "sandbox-x"}).status_code == 404


@pytest.mark.parametrize(
    "provider", [p for p in PROVIDERS.values() if p.auth_mode != "hosted_link"], ids=_ids
)
@pytest.mark.parametrize("name", ["sources:link_token", "sources:link_exchange"])
def test_the_link_steps_of_a_provider_of_another_auth_mode_are_not_found(
    signed_in, person, name, provider
):
    response = signed_in.post(
        reverse(name, args=[provider.id]),
        {"public_token": "public-sandbox-forged"},
        content_type="application/json",
    )
    assert response.status_code == 404
    assert not UserDataSource.objects.filter(user=person).exists()


@pytest.mark.parametrize("provider", HOSTED_LINK, ids=_ids)
def test_the_link_page_takes_no_post(signed_in, provider):
    assert signed_in.post(_connect(provider), {"api_key": "sandbox-x"}).status_code == 405


@pytest.mark.parametrize("provider", HOSTED_LINK, ids=_ids)
@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"\xff\xfe",
        b"[]",
        b'"a string"',
        b"null",
        b"{}",
        b'{"public_token": null}',
        b'{"public_token": 12}',
        b'{"public_token": "   "}',
        b'{"public_token": ["a"]}',
        b'{"public_token": "public-sandbox-x", "metadata": "not an object"}',
        b'{"public_token": "public-sandbox-x", "metadata": []}',
        b'{"public_token": "' + b"p" * 5000 + b'"}',
        # Nested past the JSON decoder's recursion limit.
        b'{"public_token": "public-sandbox-x", "metadata": ' + b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_a_forged_exchange_body_is_refused_with_400_before_the_provider_is_asked(
    signed_in, person, settings, provider, body
):
    settings.SIBLING_SANDBOX_BASE_URL = "http://127.0.0.1:9/sandbox"  # a call would answer 502
    response = signed_in.post(
        reverse("sources:link_exchange", args=[provider.id]),
        body,
        content_type="application/json",
    )
    assert response.status_code == 400 and response.json()["error"]
    assert not UserDataSource.objects.filter(user=person).exists()


@pytest.mark.parametrize("provider", HOSTED_LINK, ids=_ids)
def test_a_forged_public_token_connects_nothing(signed_in, person, sandbox, provider):
    response = signed_in.post(
        reverse("sources:link_exchange", args=[provider.id]),
        {"public_token": "public-sandbox-forged", "metadata": {"institution": {"name": "Mine"}}},
        content_type="application/json",
    )
    assert response.status_code == 502 and response.json()["error"]
    assert not UserDataSource.objects.filter(user=person).exists()
