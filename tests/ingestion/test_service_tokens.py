"""Service tokens: made by staff in admin (the secret shown once, only its digest stored),
permission-gated, scoped per category and optionally per person; every read counted in the
person's access ledger, once per token, person and hour."""

from __future__ import annotations

import threading
import uuid

import pytest
from bson import ObjectId
from django.db import connection
from django.test.utils import CaptureQueriesContext

from ingestion.authentication import (
    SERVICE_TOKEN_PREFIX,
    service_token_create,
    service_token_revoke,
    token_digest,
)
from ingestion.ledger import service_read_record
from ingestion.models import AccessLedgerEntry, ServiceToken
from sibling.people import person_of
from tests.factories import StaffFactory, UserDataSourceFactory, UserFactory
from tests.ingestion.records_api_helpers import (
    CONNECTIONS_URL,
    RECORDS_URL,
    get,
    kind_of,
    store,
    walk,
)

pytestmark = pytest.mark.django_db
ADD_URL = "/admin/ingestion/servicetoken/add/"
LIST_URL = "/admin/ingestion/servicetoken/"
ALL = ["read:external", "read:behavioral", "read:volunteered"]


@pytest.fixture(autouse=True)
def settled_at_once(settings):
    settings.SIBLING_RECORDS_API_SETTLE_S = 0


@pytest.fixture
def alice(db):
    user = UserFactory()
    store(user, kind_of("behavioral"), 3)
    store(user, kind_of("external"), 2)
    store(user, kind_of("volunteered"), 1)
    return user


@pytest.fixture
def bob(db):
    user = UserFactory()
    store(user, kind_of("behavioral"), 4)
    return user


def public_id(user) -> str:
    return person_of(user).public_id


def staff_client(client, *permissions):
    staff = StaffFactory(permissions=permissions)
    client.force_login(staff, backend="django.contrib.auth.backends.ModelBackend")
    return client, staff


# --- Made in admin ------------------------------------------------------------------------------


def test_staff_make_a_token_in_admin_and_see_its_secret_once(client, alice, raw_db):
    client, staff = staff_client(
        client, "ingestion.add_servicetoken", "ingestion.view_servicetoken"
    )
    response = client.post(
        ADD_URL,
        {
            "name": "Inference",
            "scopes": ["read:behavioral"],
            "person_public_id": public_id(alice),
            "_save": "Save",
        },
    )
    assert response.status_code == 200, response.content[:500]
    assert "no-store" in response["Cache-Control"]
    page = response.content.decode()
    secret = page.split('id="service-token" value="')[1].split('"')[0]
    assert secret.startswith(SERVICE_TOKEN_PREFIX)
    token = ServiceToken.objects.get()
    assert token.scopes == ["read:behavioral"]
    assert token.person.user_id == alice.pk
    assert token.created_by == staff
    # Only the digest is stored, and no later page shows the secret.
    stored = raw_db[ServiceToken._meta.db_table].find_one()
    assert stored["digest"] == token_digest(secret)
    assert secret not in str(stored)
    for url in (LIST_URL, f"{LIST_URL}{token.pk}/change/"):
        later = client.get(url)
        assert later.status_code == 200
        assert secret not in later.content.decode()
        assert token.digest not in later.content.decode()
    # It works.
    records = walk(client, secret)
    assert len(records) == 3 and {r["category"] for r in records} == {"behavioral"}


def test_a_view_only_staff_member_cannot_make_or_revoke_one(client, alice):
    existing = service_token_create(name="Existing", scopes=ALL)
    client, _staff = staff_client(client, "ingestion.view_servicetoken")
    assert client.get(LIST_URL).status_code == 200
    assert client.get(ADD_URL).status_code == 403
    response = client.post(ADD_URL, {"name": "Mine", "scopes": ALL, "_save": "Save"})
    assert response.status_code == 403
    assert ServiceToken.objects.count() == 1
    client.post(
        LIST_URL,
        {"action": "revoke", "_selected_action": [str(existing.token.pk)]},
    )
    existing.token.refresh_from_db()
    assert existing.token.is_active
    assert get(client, RECORDS_URL, existing.secret, person=public_id(alice)).status_code == 200


def test_revoking_needs_its_permission_and_refuses_the_token(client, alice):
    made = service_token_create(name="Old module", scopes=ALL)
    client, _staff = staff_client(
        client, "ingestion.view_servicetoken", "ingestion.revoke_servicetoken"
    )
    response = client.post(LIST_URL, {"action": "revoke", "_selected_action": [str(made.token.pk)]})
    assert response.status_code == 302
    made.token.refresh_from_db()
    assert made.token.revoked_at is not None
    response = get(client, RECORDS_URL, made.secret, person=public_id(alice))
    assert response.status_code == 401


def test_an_unknown_person_in_the_admin_form_is_refused(client):
    client, _staff = staff_client(
        client, "ingestion.add_servicetoken", "ingestion.view_servicetoken"
    )
    response = client.post(
        ADD_URL,
        {"name": "X", "scopes": ALL, "person_public_id": str(uuid.uuid4()), "_save": "Save"},
    )
    assert response.status_code == 200
    assert "No person has this public id." in response.content.decode()
    assert not ServiceToken.objects.exists()


# --- What a token reads -------------------------------------------------------------------------


def test_a_token_restricted_to_a_person_reads_only_them(client, alice, bob):
    secret = service_token_create(
        name="Coach", scopes=["read:behavioral"], person=person_of(alice)
    ).secret
    records = walk(client, secret)
    assert {r["person"] for r in records} == {public_id(alice)}
    assert {r["category"] for r in records} == {"behavioral"}
    # Naming someone else is refused, whoever it is (existing or not).
    for other in (public_id(bob), str(uuid.uuid4())):
        response = get(client, RECORDS_URL, secret, person=other)
        assert response.status_code == 403
        assert get(client, CONNECTIONS_URL, secret, person=other).status_code == 403
    # Bob's record, by id, looks like a missing one.
    bob_reader = service_token_create(name="All", scopes=ALL).secret
    bob_record = walk(client, bob_reader, person=public_id(bob))[0]["id"]
    assert get(client, f"{RECORDS_URL}{bob_record}/", secret).status_code == 404


def test_a_token_without_a_categorys_scope_never_reads_it(client, alice):
    secret = service_token_create(
        name="Coach", scopes=["read:behavioral"], person=person_of(alice)
    ).secret
    response = get(client, RECORDS_URL, secret, category="external")
    assert response.status_code == 403
    assert "external" in response.json()["error"]
    full = service_token_create(name="All", scopes=ALL).secret
    external_id = walk(client, full, person=public_id(alice), category="external")[0]["id"]
    assert get(client, f"{RECORDS_URL}{external_id}/", secret).status_code == 404
    assert get(client, f"{RECORDS_URL}{external_id}/", full).status_code == 200


def test_an_unrestricted_token_names_the_person(client, alice, bob):
    secret = service_token_create(name="Inference", scopes=ALL).secret
    response = get(client, RECORDS_URL, secret)
    assert response.status_code == 400
    assert list(response.json()["fields"]) == ["person"]
    assert get(client, RECORDS_URL, secret, person=str(uuid.uuid4())).status_code == 404
    assert len(walk(client, secret, person=public_id(alice))) == 6
    assert {r["person"] for r in walk(client, secret, person=public_id(bob))} == {public_id(bob)}


def test_an_attacker_guessing_ids_finds_nothing(client, alice):
    secret = service_token_create(name="Coach", scopes=ALL, person=person_of(alice)).secret
    bob = UserFactory()
    store(bob, kind_of("volunteered"), 1)
    for guess in (str(ObjectId()), "0" * 24, "f" * 24, "../records", "%00"):
        response = get(client, f"{RECORDS_URL}{guess}/", secret)
        assert response.status_code == 404, guess
    for token in ("sibsvc_" + "A" * 43, "sibsvc_", "sib_" + "A" * 43):
        assert get(client, RECORDS_URL, token).status_code == 401


def test_service_tokens_see_only_connections_of_their_categories(client, alice):
    connection = UserDataSourceFactory(user=alice, account_label="alice@private.example")
    category = connection.provider_class.category
    other = next(c for c in ("external", "behavioral", "volunteered") if c != category)
    same = service_token_create(name="S", scopes=[f"read:{category}"]).secret
    different = service_token_create(name="D", scopes=[f"read:{other}"]).secret
    listed = get(client, CONNECTIONS_URL, same, person=public_id(alice)).json()["results"]
    assert [c["id"] for c in listed] == [str(connection.pk)]
    assert "private.example" not in str(listed)
    assert get(client, CONNECTIONS_URL, different, person=public_id(alice)).json() == {
        "results": []
    }


def test_a_revoked_service_token_is_refused(client, alice):
    made = service_token_create(name="Gone", scopes=ALL, person=person_of(alice))
    service_token_revoke(token=made.token)
    assert get(client, RECORDS_URL, made.secret).status_code == 401


def test_the_throttle_counts_per_service_token(client, alice, settings):
    settings.SIBLING_RECORDS_API_RATE = "1/min"
    first = service_token_create(name="A", scopes=ALL, person=person_of(alice)).secret
    second = service_token_create(name="B", scopes=ALL, person=person_of(alice)).secret
    assert get(client, RECORDS_URL, first).status_code == 200
    assert get(client, RECORDS_URL, first).status_code == 429
    assert get(client, RECORDS_URL, second).status_code == 200


# --- The ledger ---------------------------------------------------------------------------------


def test_service_reads_are_counted_once_an_hour_in_the_ledger(client, alice):
    made = service_token_create(name="Inference", scopes=ALL, person=person_of(alice))
    walk(client, made.secret, page_size=2)  # 6 records in 3 pages (and a last, empty one?)
    record_id = walk(client, made.secret, category="external")[0]["id"]
    get(client, f"{RECORDS_URL}{record_id}/", made.secret)
    get(client, CONNECTIONS_URL, made.secret)  # no connections: nothing read
    (entry,) = AccessLedgerEntry.objects.filter(subject=alice)
    assert entry.action == AccessLedgerEntry.Action.SERVICE_READ
    assert entry.service == made.token
    assert entry.counts["behavioral"] == 3
    assert entry.counts["external"] == 2 + 2 + 1
    assert entry.counts["volunteered"] == 1
    assert entry.counts["requests"] >= 5
    assert entry.bucket.minute == 0 and entry.bucket.second == 0
    # Reads by a person's own token are not service reads.
    assert not AccessLedgerEntry.objects.filter(subject=UserFactory()).exists()


def test_concurrent_reads_share_one_entry_and_lose_no_count(alice):
    token = service_token_create(name="Busy", scopes=ALL).token
    errors: list[BaseException] = []

    def read() -> None:
        try:
            for _ in range(5):
                service_read_record(subject_id=alice.pk, service=token, counts={"external": 2})
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=read) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    (entry,) = AccessLedgerEntry.objects.filter(subject=alice)
    assert entry.counts == {"external": 60, "requests": 30}


def test_the_person_and_staff_see_service_reads(client, alice):
    made = service_token_create(name="Inference", scopes=ALL, person=person_of(alice))
    walk(client, made.secret, category="behavioral")
    client.force_login(alice, backend="django.contrib.auth.backends.ModelBackend")
    page = client.get("/settings/privacy/").content.decode()
    assert "Sibling service “Inference”" in page
    assert "Read 3 behavioral records" in page
    client.logout()
    client, _staff = staff_client(client, "ingestion.view_person_privacy")
    page = client.get(f"/admin/privacy/{alice.pk}/").content.decode()
    assert "service Inference" in page
    assert "3 behavioral records" in page


def test_an_erasure_takes_the_ledger_and_the_persons_tokens(alice):
    from ingestion.erasure import person_erase

    made = service_token_create(name="Coach", scopes=ALL, person=person_of(alice))
    service_read_record(subject_id=alice.pk, service=made.token, counts={"external": 1})
    person_erase(user=alice)
    assert not AccessLedgerEntry.objects.exists()
    assert not ServiceToken.objects.filter(pk=made.token.pk).exists()


# --- Migration and indexes ----------------------------------------------------------------------


def test_the_migration_gives_existing_tokens_events_write_only(raw_db):
    """What migration 0013's AddField does to a token stored before scopes existed."""
    from django.db import connection

    from ingestion.authentication import api_token_create
    from ingestion.models import ApiToken

    made = api_token_create(user=UserFactory(), name="Before scopes")
    collection = raw_db[ApiToken._meta.db_table]
    collection.update_one({"_id": made.token.pk}, {"$unset": {"scopes": ""}})
    with connection.schema_editor() as editor:
        editor.add_field(ApiToken, ApiToken._meta.get_field("scopes"))
    assert collection.find_one({"_id": made.token.pk})["scopes"] == ["events:write"]


def test_token_and_ledger_lookups_use_their_indexes(raw_db, alice):
    made = service_token_create(name="Indexed", scopes=ALL)
    tokens = raw_db[ServiceToken._meta.db_table]
    plan = str(tokens.find({"digest": made.token.digest}).explain()["queryPlanner"])
    assert "service_token_digest" in plan and "COLLSCAN" not in plan
    service_read_record(subject_id=alice.pk, service=made.token, counts={"external": 1})
    entry = AccessLedgerEntry.objects.get(subject=alice)
    key = {
        "subject_id": alice.pk,
        "service_id": made.token.pk,
        "bucket": entry.bucket,
        "action": "service_read",
    }
    ledger = raw_db[AccessLedgerEntry._meta.db_table]
    plan = str(ledger.find(key).explain()["queryPlanner"])
    assert "ledger_service_read_batch" in plan and "COLLSCAN" not in plan


def test_a_superuser_makes_one_and_the_list_never_shows_a_secret(client, db):
    admin_user = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(admin_user, backend="django.contrib.auth.backends.ModelBackend")
    response = client.post(ADD_URL, {"name": "Reports", "scopes": ALL, "_save": "Save"})
    secret = response.content.decode().split('id="service-token" value="')[1].split('"')[0]
    token = ServiceToken.objects.get(name="Reports")
    assert token.person is None and token.created_by == admin_user
    listing = client.get(LIST_URL).content.decode()
    assert "Reports" in listing and token.prefix in listing
    assert secret not in listing and token.digest not in listing
    # Not editable, not deletable: a changed need is a new token.
    assert client.post(f"{LIST_URL}{token.pk}/change/", {"name": "Renamed"}).status_code == 403
    assert client.get(f"{LIST_URL}{token.pk}/delete/").status_code == 403
    assert ServiceToken.objects.get(pk=token.pk).name == "Reports"


def test_the_token_list_reads_people_and_makers_with_the_page(client, db):
    admin_user = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(admin_user, backend="django.contrib.auth.backends.ModelBackend")

    def listing_queries() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert client.get(LIST_URL).status_code == 200
        return len(queries.captured_queries)

    def made(n: int) -> None:
        for _ in range(n):
            service_token_create(
                name="Coach", scopes=ALL, person=person_of(UserFactory()), created_by=admin_user
            )

    made(1)
    one = listing_queries()
    made(4)
    assert listing_queries() == one


def test_a_read_the_ledger_cannot_record_is_not_answered_and_is_logged(
    client, alice, monkeypatch, caplog
):
    from pymongo.errors import AutoReconnect

    from ingestion import records_api

    def down(**kwargs):
        raise AutoReconnect("ledger unreachable")

    monkeypatch.setattr(records_api, "service_read_record", down)
    made = service_token_create(name="Inference", scopes=ALL, person=person_of(alice))
    with caplog.at_level("ERROR"):
        response = get(client, RECORDS_URL, made.secret)
    assert response.status_code == 503
    assert "results" not in response.json()
    assert any("ledger" in r.getMessage() and r.exc_info for r in caplog.records)
    assert made.secret not in caplog.text and public_id(alice) not in caplog.text


def test_a_person_is_found_by_public_id_or_account_through_an_index(raw_db, alice):
    # Every records API request finds its person one way or the other.
    from sibling.models import Person

    people = raw_db[Person._meta.db_table]
    for lookup in ({"public_id": public_id(alice)}, {"user_id": alice.pk}):
        plan = str(people.find(lookup).explain()["queryPlanner"]["winningPlan"])
        assert "IXSCAN" in plan and "COLLSCAN" not in plan, (lookup, plan)
