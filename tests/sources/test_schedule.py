"""A person's control of their sources: how often each connection syncs, how far back its first
sync reaches, and a reconnect that fetches only the gap. As the person, another person, an
anonymous visitor and view-only staff; the syncs run against the sandbox over HTTP."""

from __future__ import annotations

from datetime import date, timedelta
from urllib.parse import urljoin

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from ingestion.scheduler import connection_claim, dispatch_due_syncs
from sources.forms import backfill_label, interval_label
from sources.models import UserDataSource
from sources.providers import PROVIDERS
from sources.providers.base import BACKFILL_CHOICES_DAYS, BACKFILL_EVERYTHING, HOUR
from sources.services import (
    connection_backfill_set,
    connection_data_delete,
    connection_disconnect,
    connection_schedule_set,
    connection_upsert,
)
from tests.factories import StaffFactory, UserDataSourceFactory, UserFactory
from tests.ingestion.conftest import fresh, stored, sync
from tests.sources.browsing import Browser, forms_of
from tests.sources.conftest import PASSWORD
from tests.sources.providers.kit import hooks, provider_for, providers, sandbox_connection

pytestmark = pytest.mark.django_db
Status = UserDataSource.Status


def _ids(provider) -> str:
    return provider.id


def _short_and_long():
    """A provider offering a schedule of an hour or less, and its shortest and longest."""
    provider = next(p for p in PROVIDERS.values() if min(p.sync_interval_choices) <= HOUR)
    return provider, min(provider.sync_interval_choices), max(provider.sync_interval_choices)


def _synced(provider, user, *, interval: int, ago: timedelta, **fields) -> UserDataSource:
    """An active connection whose last sync succeeded ``ago`` and is scheduled by ``interval``,
    as the runner leaves it."""
    last = timezone.now() - ago
    return UserDataSourceFactory(
        user=user,
        provider=provider.id,
        sync_interval=interval,
        last_success_at=last,
        next_sync_at=last + timedelta(seconds=interval),
        cursors={"a-stream": "somewhere"},
        **fields,
    )


def _schedule(client, connection, value):
    return client.post(reverse("sources:schedule", args=[connection.pk]), {"sync_interval": value})


def _history(client, connection, value):
    return client.post(reverse("sources:history", args=[connection.pk]), {"backfill_days": value})


def _said(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


# --- What each provider declares ------------------------------------------------------------


@pytest.mark.parametrize("provider", list(PROVIDERS.values()), ids=_ids)
def test_each_provider_offers_schedules_and_its_default_is_one_of_them(provider):
    choices = provider.sync_interval_choices
    assert choices and list(choices) == sorted(set(choices))
    assert all(isinstance(s, int) and s >= 60 for s in choices)
    assert provider.default_sync_interval_s in choices


@pytest.mark.parametrize("provider", list(PROVIDERS.values()), ids=_ids)
def test_each_provider_offers_the_common_windows_up_to_its_maximum(provider, settings):
    choices = provider.backfill_choices()
    limit = provider.max_backfill_days
    assert choices[:-1] == tuple(d for d in BACKFILL_CHOICES_DAYS if limit is None or d < limit)
    assert choices[-1] == (BACKFILL_EVERYTHING if limit is None else limit)
    settings.SIBLING_BACKFILL_DAYS = 10_000
    assert provider.backfill_days_default() == (10_000 if limit is None else limit)
    assert provider.backfill_days_valid(provider.backfill_days_default())
    assert not provider.backfill_days_valid(7) and not provider.backfill_days_valid(-1)


def test_labels_say_it_in_words():
    assert interval_label(900) == "Every 15 minutes"
    assert interval_label(3600) == "Every hour"
    assert interval_label(6 * 3600) == "Every 6 hours"
    assert interval_label(86400) == "Once a day"
    provider = providers(max_backfill_days=None)[0]
    assert backfill_label(provider, BACKFILL_EVERYTHING) == f"Everything {provider.name} has"
    assert backfill_label(provider, 365) == "1 year"


# --- The card --------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", list(PROVIDERS.values()), ids=_ids)
def test_the_card_offers_the_providers_schedules_and_the_history_window(
    signed_in, person, provider
):
    connection = UserDataSourceFactory(user=person, provider=provider.id, backfill_progress=0.0)
    page = signed_in.get(reverse("sources:connections")).content.decode()
    assert f'action="{reverse("sources:schedule", args=[connection.pk])}"' in page
    for seconds in provider.sync_interval_choices:
        assert f'<option value="{seconds}"' in page
        assert interval_label(seconds) in page
    history_action = f'action="{reverse("sources:history", args=[connection.pk])}"'
    if provider.backfill_fixed_at_connect:
        # Chosen on the connect step only: the card says what was fetched.
        assert history_action not in page
        assert "History fetched" in page
    else:
        assert history_action in page
        for days in provider.backfill_choices():
            assert escape(backfill_label(provider, days)) in page
    # Once something is fetched, the window is settled and shown as a fact.
    UserDataSource.objects.filter(pk=connection.pk).update(cursors={"a-stream": "x"})
    page = signed_in.get(reverse("sources:connections")).content.decode()
    assert history_action not in page and "History fetched" in page


def test_a_schedule_staff_set_in_admin_is_shown_as_it_is(signed_in, person):
    provider = provider_for(auth_mode="api_key")
    odd = 7 * 60  # not one of the provider's choices
    connection = UserDataSourceFactory(user=person, provider=provider.id, sync_interval=odd)
    page = signed_in.get(reverse("sources:connections")).content.decode()
    assert f'<option value="{odd}" selected>Every 7 minutes</option>' in page
    # Kept when saved unchanged; another value than the provider's is refused.
    assert _schedule(signed_in, connection, odd).status_code == 302
    assert fresh(connection).sync_interval == odd
    _schedule(signed_in, connection, 11 * 60)
    assert fresh(connection).sync_interval == odd


# --- How often: the person's choice moves the schedule, and the dispatcher follows it -----------


def test_a_shorter_schedule_makes_it_due_and_the_dispatcher_takes_it(signed_in, person):
    provider, shortest, longest = _short_and_long()
    connection = _synced(provider, person, interval=longest, ago=timedelta(hours=2))
    assert str(connection.pk) not in dispatch_due_syncs(enqueue=False)

    response = _schedule(signed_in, connection, shortest)
    assert response.status_code == 302 and response["Location"] == reverse("sources:connections")
    assert f"now syncs {interval_label(shortest).lower()}" in _said(response)[-1]
    after = fresh(connection)
    assert after.sync_interval == shortest
    assert after.next_sync_at <= timezone.now()  # its last sync is longer ago than the interval
    assert str(connection.pk) in dispatch_due_syncs(enqueue=False)


def test_a_longer_schedule_moves_the_next_sync_later(signed_in, person):
    provider, shortest, longest = _short_and_long()
    connection = _synced(provider, person, interval=shortest, ago=timedelta(minutes=1))
    _schedule(signed_in, connection, longest)
    after = fresh(connection)
    assert after.sync_interval == longest
    assert after.next_sync_at == after.last_success_at + timedelta(seconds=longest)
    now = timezone.now()
    soon = now + timedelta(seconds=shortest)
    assert str(connection.pk) not in dispatch_due_syncs(now=soon, enqueue=False)
    assert str(connection.pk) in dispatch_due_syncs(
        now=now + timedelta(seconds=longest), enqueue=False
    )


def test_a_sooner_request_and_a_deferral_stand_when_the_schedule_changes(person):
    provider, shortest, longest = _short_and_long()
    # "Sync now" (or a provider's notification) made it due: lengthening keeps it due.
    asked = _synced(provider, person, interval=shortest, ago=timedelta(minutes=1))
    UserDataSource.objects.filter(pk=asked.pk).update(next_sync_at=timezone.now())
    assert connection_schedule_set(connection=fresh(asked), sync_interval=longest)
    assert fresh(asked).next_sync_at <= timezone.now()
    # A spent quota deferred it for a day: shortening does not bring it back sooner.
    deferred_until = timezone.now() + timedelta(days=1, hours=1)
    deferred = _synced(
        provider, UserFactory(), interval=longest, ago=timedelta(hours=3), external_account_id="d"
    )
    UserDataSource.objects.filter(pk=deferred.pk).update(next_sync_at=deferred_until)
    deferred = fresh(deferred)
    stored_until = deferred.next_sync_at
    assert connection_schedule_set(connection=deferred, sync_interval=shortest)
    assert fresh(deferred).next_sync_at == stored_until


@pytest.mark.django_db(transaction=True)
def test_a_schedule_chosen_while_a_sync_runs_outlasts_the_runs_end(person, sandbox):
    """The run read the old interval when it started; the person's choice still stands."""
    connection = sandbox_connection(person, auth_mode="api_key")
    longest = max(connection.provider_class.sync_interval_choices)
    assert connection.sync_interval != longest
    chosen = {}

    def the_person_chooses_meanwhile(run, stream, progress):
        if not chosen:
            chosen["at"] = timezone.now()
            assert connection_schedule_set(connection=fresh(connection), sync_interval=longest)
            chosen["next"] = fresh(connection).next_sync_at

    run = sync(connection, on_page=the_person_chooses_meanwhile)
    assert run.outcome == "success", run.error_message
    after = fresh(connection)
    assert after.sync_interval == longest and after.next_sync_at == chosen["next"]
    assert chosen["next"] >= chosen["at"] + timedelta(seconds=longest - 1)


@pytest.mark.parametrize("value", ["1", "abc", "", "-3600", "99999999999999999999", "3600.5"])
def test_a_schedule_the_provider_does_not_offer_is_refused_and_changes_nothing(
    signed_in, person, value
):
    provider, _, longest = _short_and_long()
    connection = _synced(provider, person, interval=longest, ago=timedelta(minutes=5))
    connection = fresh(connection)
    response = _schedule(signed_in, connection, value)
    assert response.status_code == 302
    assert "not a schedule" in _said(response)[-1]
    after = fresh(connection)
    assert (after.sync_interval, after.next_sync_at) == (longest, connection.next_sync_at)


def test_a_paused_connection_keeps_its_schedule_until_resumed(signed_in, person):
    provider, shortest, longest = _short_and_long()
    connection = fresh(
        _synced(provider, person, interval=longest, ago=timedelta(hours=3), status=Status.PAUSED)
    )
    _schedule(signed_in, connection, shortest)
    after = fresh(connection)
    assert after.sync_interval == shortest and after.next_sync_at == connection.next_sync_at


def test_a_disconnected_connection_offers_no_schedule(signed_in, person):
    connection = UserDataSourceFactory(user=person, status=Status.DISCONNECTED)
    page = signed_in.get(reverse("sources:connections")).content.decode()
    assert reverse("sources:schedule", args=[connection.pk]) not in page
    response = _schedule(signed_in, connection, connection.provider_class.sync_interval_choices[0])
    assert "disconnected" in _said(response)[-1]
    assert fresh(connection).sync_interval == connection.sync_interval


# --- Who may change it ------------------------------------------------------------------------


def test_another_persons_connection_is_404_and_unchanged(signed_in):
    provider, shortest, longest = _short_and_long()
    theirs = fresh(_synced(provider, UserFactory(), interval=longest, ago=timedelta(hours=3)))
    theirs_new = UserDataSourceFactory(user=theirs.user, external_account_id="new")
    assert _schedule(signed_in, theirs, shortest).status_code == 404
    assert _history(signed_in, theirs_new, BACKFILL_CHOICES_DAYS[0]).status_code == 404
    for missing in ("000000000000000000000000", "not-an-id"):
        assert signed_in.post(reverse("sources:schedule", args=[missing])).status_code == 404
    assert fresh(theirs).sync_interval == longest
    assert fresh(theirs).next_sync_at == theirs.next_sync_at
    assert fresh(theirs_new).backfill_days is None


def test_anonymous_visitors_are_sent_to_log_in_and_nothing_changes(client):
    provider, shortest, longest = _short_and_long()
    connection = _synced(provider, UserFactory(), interval=longest, ago=timedelta(hours=3))
    for response in (
        _schedule(client, connection, shortest),
        _history(client, connection, BACKFILL_CHOICES_DAYS[0]),
    ):
        assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    assert fresh(connection).sync_interval == longest


def test_the_settings_take_posts_only(signed_in, person):
    connection = UserDataSourceFactory(user=person)
    for name in ("sources:schedule", "sources:history"):
        assert signed_in.get(reverse(name, args=[connection.pk])).status_code == 405


def test_view_only_staff_cannot_change_a_persons_schedule(client):
    provider, shortest, longest = _short_and_long()
    connection = _synced(provider, UserFactory(), interval=longest, ago=timedelta(hours=3))
    staff = StaffFactory(permissions=("sources.view_userdatasource",))
    client.force_login(staff, backend="django.contrib.auth.backends.ModelBackend")
    # The person's card is theirs alone.
    assert _schedule(client, connection, shortest).status_code == 404
    # Admin shows the schedule and offers no change.
    change = reverse("admin:sources_userdatasource_change", args=[connection.pk])
    assert client.get(change).status_code == 200
    refused = client.post(change, {"sync_interval": shortest})
    assert refused.status_code == 403
    assert fresh(connection).sync_interval == longest


def test_staff_who_may_change_connections_still_set_any_interval_in_admin(client):
    connection = UserDataSourceFactory()
    editor = StaffFactory(
        permissions=("sources.view_userdatasource", "sources.change_userdatasource")
    )
    client.force_login(editor, backend="django.contrib.auth.backends.ModelBackend")
    change = reverse("admin:sources_userdatasource_change", args=[connection.pk])
    response = client.post(
        change,
        {
            "sync_interval": str(7 * 60),
            "next_sync_at_0": "",
            "next_sync_at_1": "",
            "notice": "",
            "runs-TOTAL_FORMS": "0",
            "runs-INITIAL_FORMS": "0",
            "_save": "Save",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert fresh(connection).sync_interval == 7 * 60


# --- How far back ------------------------------------------------------------------------------


def _choosable_provider():
    return next(p for p in PROVIDERS.values() if not p.backfill_fixed_at_connect)


def test_the_history_window_changes_until_the_first_sync_has_fetched_something(signed_in, person):
    provider = _choosable_provider()
    connection = UserDataSourceFactory(user=person, provider=provider.id, backfill_progress=0.0)
    chosen = provider.backfill_choices()[-1]
    response = _history(signed_in, connection, chosen)
    assert f"first sync will fetch: {backfill_label(provider, chosen)}" in _said(response)[-1]
    assert fresh(connection).backfill_days == chosen

    # A page stored (its cursor with it): settled.
    UserDataSource.objects.filter(pk=connection.pk).update(cursors={"a-stream": "x"})
    response = _history(signed_in, connection, BACKFILL_CHOICES_DAYS[0])
    assert "can no longer change" in _said(response)[-1]
    assert fresh(connection).backfill_days == chosen


def test_the_history_window_cannot_change_while_a_sync_holds_the_connection(person):
    provider = _choosable_provider()
    connection = UserDataSourceFactory(user=person, provider=provider.id)
    assert connection_claim(connection_id=connection.pk, due=False)
    assert not connection_backfill_set(
        connection=fresh(connection), backfill_days=BACKFILL_CHOICES_DAYS[0]
    )
    assert fresh(connection).backfill_days is None


@pytest.mark.parametrize("value", ["7", "abc", "", "-30", "1e9"])
def test_a_history_window_the_provider_does_not_offer_is_refused(signed_in, person, value):
    provider = _choosable_provider()
    connection = UserDataSourceFactory(user=person, provider=provider.id)
    response = _history(signed_in, connection, value)
    assert response.status_code == 302 and "not a history window" in _said(response)[-1]
    assert fresh(connection).backfill_days is None


def test_a_provider_that_fixes_its_history_at_connect_refuses_it_on_the_card(signed_in, person):
    provider = provider_for(backfill_fixed_at_connect=True)
    connection = UserDataSourceFactory(user=person, provider=provider.id)
    response = _history(signed_in, connection, BACKFILL_CHOICES_DAYS[0])
    assert "can no longer change" in _said(response)[-1]
    assert fresh(connection).backfill_days is None


@pytest.mark.django_db(transaction=True)
def test_the_chosen_window_is_what_the_first_sync_fetches(sandbox, settings):
    """Two people connect the same kind of source; one keeps the default window, the other
    chooses a longer one on the card before anything is fetched."""
    settings.SIBLING_BACKFILL_DAYS = 14
    usual = sandbox_connection(UserFactory(), auth_mode="api_key")
    longer = sandbox_connection(UserFactory(), auth_mode="api_key")
    assert connection_backfill_set(connection=fresh(longer), backfill_days=30)
    runs = {c.pk: sync(c) for c in (usual, longer)}
    assert {r.outcome for r in runs.values()} == {"success"}

    def oldest(connection) -> date:
        return min(r["occurred_at"] for r in stored(connection)).date()

    today = timezone.now().date()
    assert today - timedelta(days=15) <= oldest(usual)
    assert today - timedelta(days=31) <= oldest(longer) < today - timedelta(days=15)
    assert runs[longer.pk].api_calls > runs[usual.pk].api_calls


# --- The connect steps: the window is chosen before the first sync -----------------------------


@pytest.mark.django_db(transaction=True)
def test_a_key_connect_takes_the_window_chosen_on_its_form(signed_in, person, sandbox):
    provider = provider_for(auth_mode="api_key")
    connect = reverse("sources:connect", args=[provider.id])
    page = signed_in.get(connect).content.decode()
    assert 'name="backfill_days"' in page
    refused = signed_in.post(connect, {"api_key": "sandbox-a-key", "backfill_days": "7"})
    assert refused.status_code == 200 and "Select a valid choice" in refused.content.decode()
    assert not UserDataSource.objects.filter(user=person).exists()
    chosen = provider.backfill_choices()[-1]
    signed_in.post(connect, {"api_key": "sandbox-a-key", "backfill_days": str(chosen)})
    assert UserDataSource.objects.get(user=person).backfill_days == chosen


@pytest.mark.django_db(transaction=True)
def test_an_oauth2_connect_takes_the_window_chosen_beside_its_button(sandbox, person):
    provider = provider_for(auth_mode="oauth2", backfill_fixed_at_connect=False)
    test_hooks = hooks(provider.id)
    browser = Browser(sandbox.url)
    browser.log_in(person.username, PASSWORD)
    card = browser.get(reverse("sources:connections")).text
    assert f'name="backfill_days" id="id_backfill_days_{provider.id}"' in card
    chosen = provider.backfill_choices()[-1]
    start = browser.post(
        reverse("social:begin", args=[provider.id]),
        {"backfill_days": str(chosen)},
        allow_redirects=False,
    )
    assert start.status_code == 302, start.status_code
    consent = browser.session.get(start.headers["Location"], timeout=30)
    form = next(f for f in forms_of(consent.text) if f.has_button(test_hooks.allow_button))
    account = test_hooks.account()
    data = form.submit_data(
        test_hooks.allow_button, **test_hooks.consent_values(form.fields, account)
    )
    done = browser.session.request(
        form.method.upper(), urljoin(consent.url, form.action), data=data, timeout=30
    )
    assert f"{escape(provider.name)} is connected" in done.text, done.text[:2000]
    assert UserDataSource.objects.get(user=person, provider=provider.id).backfill_days == chosen


@pytest.mark.django_db(transaction=True)
def test_an_oauth2_connect_with_a_forged_window_takes_the_default_and_says_so(sandbox, person):
    provider = provider_for(auth_mode="oauth2")
    test_hooks = hooks(provider.id)
    browser = Browser(sandbox.url)
    browser.log_in(person.username, PASSWORD)
    start = browser.post(
        reverse("social:begin", args=[provider.id]), {"backfill_days": "7"}, allow_redirects=False
    )
    consent = browser.session.get(start.headers["Location"], timeout=30)
    form = next(f for f in forms_of(consent.text) if f.has_button(test_hooks.allow_button))
    data = form.submit_data(
        test_hooks.allow_button, **test_hooks.consent_values(form.fields, test_hooks.account())
    )
    done = browser.session.request(
        form.method.upper(), urljoin(consent.url, form.action), data=data, timeout=30
    )
    assert "not one" in done.text and f"{escape(provider.name)} is connected" in done.text
    assert UserDataSource.objects.get(user=person, provider=provider.id).backfill_days is None


@pytest.mark.django_db(transaction=True)
def test_a_hosted_link_refuses_a_window_it_does_not_offer_before_asking_the_provider(
    signed_in, person, sandbox
):
    provider = provider_for(auth_mode="hosted_link")
    answer = signed_in.post(
        reverse("sources:link_token", args=[provider.id]),
        {"backfill_days": 7},
        content_type="application/json",
    )
    assert answer.status_code == 400 and answer.json()["error"].startswith("backfill_days")
    page = signed_in.get(reverse("sources:connect", args=[provider.id])).content.decode()
    assert 'name="backfill_days"' in page


# --- Reconnecting fetches only the gap --------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_reconnect_after_a_disconnect_fetches_only_the_gap(sandbox, settings):
    settings.SIBLING_BACKFILL_DAYS = 14
    connection = sandbox_connection(UserFactory(), auth_mode="api_key")
    key = connection.sandbox_account
    first = sync(connection)
    assert first.outcome == "success" and first.created > 0
    cursors = fresh(connection).cursors
    connection_disconnect(connection=fresh(connection), delete_data=False)

    again = connection_upsert(
        user=connection.user,
        provider=connection.provider_class,
        external_account_id=connection.external_account_id,
        credentials={"api_key": key},
    )
    assert again.pk == connection.pk and again.status == Status.ACTIVE
    assert fresh(again).cursors == cursors and fresh(again).backfill_progress is None
    run = sync(again)
    assert run.outcome == "success", run.error_message
    # Only the days since its cursors: a fraction of the first sync's calls, nothing new stored.
    assert run.api_calls < first.api_calls and run.created == 0


def test_a_reconnect_does_not_change_a_settled_history_window(person):
    provider = _choosable_provider()
    connection = UserDataSourceFactory(
        user=person, provider=provider.id, backfill_days=30, cursors={"a-stream": "x"}
    )
    connection_upsert(
        user=person,
        provider=provider,
        external_account_id=connection.external_account_id,
        credentials=connection.credentials,
        backfill_days=provider.backfill_choices()[-1],
    )
    assert fresh(connection).backfill_days == 30


def test_deleting_a_connections_data_forgets_its_cursors(person):
    """With its records gone, a reconnect must fetch the history again, not only the gap."""
    connection = UserDataSourceFactory(
        user=person, cursors={"a-stream": "x"}, backfill_progress=None
    )
    connection_data_delete(connection=connection)
    after = fresh(connection)
    assert after.cursors == {} and after.backfill_progress == 0.0
