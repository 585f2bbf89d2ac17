"""Delete all my data: grants revoked, every trace deleted, the data key destroyed, so that no
document anywhere holds the person's plaintext and what ciphertext is left cannot be read."""

import ast

import bson
import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone
from django_q.models import Schedule
from pymongo.encryption import ClientEncryption
from pymongo.errors import EncryptionError

from ingestion.authentication import api_token_create
from ingestion.erasure import person_erase, person_erase_sweep
from ingestion.errors import PersonErased
from ingestion.events import events_accept
from ingestion.fence import data_key_ensure, erasure_subject
from ingestion.ledger import ledger_record
from ingestion.models import (
    AccessLedgerEntry,
    ApiToken,
    ErasureRecord,
    QuarantinedItem,
    RawPage,
    SyncRun,
    WebhookEvent,
)
from ingestion.runner import connection_sync
from ingestion.schemas import ProcessedPage, Quarantined, Record
from ingestion.storage import page_store, record_decode
from sibling.encryption import CODEC_OPTIONS, data_key_alt_name, key_vault_collection
from sibling.mongo import plain_client, plain_database
from sources.models import UserDataSource
from tests.factories import UserFactory
from tests.ingestion.conftest import NO_WAIT, fresh, stored
from tests.sources.conftest import PASSWORD
from tests.sources.providers.kit import hooks, provider_for, sandbox_fault

pytestmark = pytest.mark.django_db(transaction=True)


def _documents_mentioning(user_id, needles: list[bytes]) -> list[tuple[str, dict]]:
    database = plain_database()
    found = []
    for name in database.list_collection_names():
        if name.startswith("sandbox_"):
            continue  # the imitated providers' own state: at a real provider, not in Sibling
        for document in database[name].find():
            encoded = bson.encode(document)
            if bson.encode({"v": user_id})[4:-1][1:] in encoded or any(
                n in encoded for n in needles
            ):
                found.append((name, document.get("_id")))
    return found


def test_delete_all_my_data(client, link_connection, key_connection, person, settings):
    settings.SIBLING_SYNC_ON_DUE = False
    connection_sync(link_connection.pk, policy=NO_WAIT)
    sandbox_fault(key_connection, "malformed")
    connection_sync(key_connection.pk, policy=NO_WAIT)
    api_token_create(user=person, name="phone")
    events_accept(
        user=person,
        events=[
            {
                "id": "mood-1",
                "kind": "note",
                "occurred_at": "2026-11-20T08:00:00Z",
                "data": {"text": "a very private thought"},
            }
        ],
    )
    leftover_ciphertext = stored(link_connection)[0]["sealed"]  # as if a backup kept it
    names = _plaintext_of(link_connection, person)
    credentials = fresh(link_connection).credentials
    access_token = credentials["access_token"]
    email = person.email.encode()

    client.force_login(person, backend="django.contrib.auth.backends.ModelBackend")
    refused = client.post(reverse("ingestion:privacy"), {"confirm": "yes", "password": PASSWORD})
    assert refused.status_code == 200 and UserDataSource.objects.filter(user=person).exists()
    page = client.post(
        reverse("ingestion:privacy"), {"confirm": "delete my data", "password": PASSWORD}
    )
    assert page.status_code == 200 and "Your data was deleted" in page.content.decode()

    # Nothing anywhere names the person or holds their plaintext.
    needles = [email, b"a very private thought", access_token.encode(), *names]
    assert _documents_mentioning(person.pk, needles) == []
    assert (
        key_vault_collection().count_documents({"keyAltNames": data_key_alt_name(person.pk)}) == 0
    )
    # A copy of their ciphertext cannot be decrypted by any process that starts now.
    fresh_process = ClientEncryption(
        settings.SIBLING_KMS_PROVIDERS,
        settings.SIBLING_KEY_VAULT_NAMESPACE,
        plain_client(),
        CODEC_OPTIONS,
    )
    with pytest.raises(EncryptionError):
        fresh_process.decrypt(leftover_ciphertext)
    # The link was withdrawn at the provider.
    assert not hooks(link_connection.provider).credentials_work(credentials)
    # The erasure is recorded, without personal data.
    erasure = ErasureRecord.objects.get()
    assert erasure.subject == erasure_subject(person.pk) and erasure.key_destroyed
    assert erasure.counts["connections"] == 2 and erasure.counts["records"] > 0
    assert erasure.counts["sync_runs"] == 2 and erasure.counts["quarantined"] > 0
    assert client.get(reverse("sources:connections")).status_code == 302  # signed out


def _plaintext_of(connection, person) -> list[bytes]:
    """Distinctive values of the connection's records, in the clear (the needles to look for)."""
    values = [
        str(value)
        for record in stored(connection)[:20]
        for value in record_decode(record, owner_id=person.pk)["data"].values()
        if isinstance(value, str) and len(value) >= 12
    ]
    assert values
    return [value.encode() for value in values]


def _left_of(user_id) -> dict[str, int]:
    """Everything of the person's, counted in the raw collections (nothing decrypted)."""
    database = plain_database()
    left = {
        name: database[name].count_documents({"user": user_id})
        for name in ("external_data", "behavioral_data", "volunteered_data")
    }
    for model in (RawPage, QuarantinedItem, WebhookEvent, SyncRun, UserDataSource, ApiToken):
        left[model._meta.db_table] = database[model._meta.db_table].count_documents(
            {"user_id": user_id}
        )
    left["keys"] = key_vault_collection().count_documents(
        {"keyAltNames": data_key_alt_name(user_id)}
    )
    return left


def _scheduled_sweeps_run() -> int:
    """Run the follow-up sweeps as the workers would once they are due."""
    sweeps = Schedule.objects.filter(func="ingestion.erasure.person_erase_sweep")
    for schedule in sweeps:
        assert schedule.schedule_type == Schedule.ONCE
        assert schedule.next_run > timezone.now()  # after every process's key cache expired
        person_erase_sweep(*ast.literal_eval(schedule.args))
    return len(sweeps)


def test_an_erasure_during_a_sync_stops_it_and_leaves_nothing(key_connection, person, settings):
    settings.SIBLING_SYNC_ON_DUE = False
    settings.SIBLING_BACKFILL_DAYS = 30  # several pages, so the sync goes on after the erasure
    user_id = person.pk
    pages_after_erasure = []

    def erase_after_the_first_page(run, stream, progress):
        if ErasureRecord.objects.exists():
            pages_after_erasure.append(stream)  # a page stored after the fence: must not happen
            return
        assert _left_of(user_id)["behavioral_data"] > 0  # the sync had stored something
        person_erase(user=person)

    run = connection_sync(key_connection.pk, policy=NO_WAIT, on_page=erase_after_the_first_page)

    # The next page met the fence: the run ended there, writing nothing.
    assert pages_after_erasure == []
    assert run.outcome == SyncRun.Outcome.FAILED and run.error_class == "PersonErased"
    # Nothing is left, the run included: ending, the runner updates its run and does not bring
    # back the row the erasure deleted.
    assert set(_left_of(user_id).values()) == {0}
    assert _scheduled_sweeps_run() == 1
    assert set(_left_of(user_id).values()) == {0}
    assert not get_user_model().objects.filter(pk=user_id).exists()
    erasure = ErasureRecord.objects.get()
    assert erasure.completed and erasure.key_destroyed
    assert erasure.subject == erasure_subject(user_id)
    assert str(user_id) not in str(raw_erasure_records())


def raw_erasure_records() -> list[dict]:
    return list(plain_database()[ErasureRecord._meta.db_table].find())


def test_the_fence_comes_first_and_refuses_every_write(person, raw_db):
    """While an erasure is under way (its record written, not completed), nothing of the person
    is stored and no key is made for them: not a page of records, not an event batch."""
    data_key_ensure(person.pk)
    fence_subject = erasure_subject(person.pk)
    ErasureRecord.objects.create(subject=fence_subject, erased_at=timezone.now(), completed=False)
    page = ProcessedPage(
        records=[
            Record("mood_rating", "m-late", timezone.now(), {"rating": 2, "note": "late write"})
        ],
        quarantined=[Quarantined(reason="note: missing text", item={"text": None})],
    )
    with pytest.raises(PersonErased):
        page_store(
            connection=None,
            user_id=person.pk,
            provider="sibling_app",
            stream="events",
            processed=page,
        )
    with pytest.raises(PersonErased):
        events_accept(
            user=person,
            events=[
                {
                    "id": "late",
                    "kind": "note",
                    "occurred_at": "2026-11-20T08:00:00Z",
                    "data": {"text": "written while being erased"},
                }
            ],
        )
    assert raw_db["volunteered_data"].count_documents({"user": person.pk}) == 0
    assert raw_db[QuarantinedItem._meta.db_table].count_documents({"user_id": person.pk}) == 0
    assert raw_db[WebhookEvent._meta.db_table].count_documents({}) == 0

    # An erasure that stopped half way is run again under the same fence, and completes.
    person_erase(user=person)
    erasure = ErasureRecord.objects.get()
    assert erasure.subject == fence_subject and erasure.completed
    assert set(_left_of(person.pk).values()) == {0}


def test_the_sweep_removes_what_a_process_still_holding_the_key_wrote(person, raw_db, settings):
    """A sync in another process that passed the fence just before it was set may still write
    its page, even with a key of its own cached; the follow-up sweep removes it all."""
    user_id = person.pk
    provider = provider_for(category="behavioral")
    person_erase(user=person)
    # What such a late page leaves: records, a raw page, a run, and (a key re-created by a
    # process that checked the fence before it was set).
    raw_db["behavioral_data"].insert_one(
        {
            "user": user_id,
            "provider": provider.id,
            "kind": provider.streams[0].kind,
            "external_id": "d",
        }
    )
    raw_db[RawPage._meta.db_table].insert_one({"user_id": user_id, "provider": provider.id})
    raw_db[SyncRun._meta.db_table].insert_one({"user_id": user_id, "provider": provider.id})
    ClientEncryption(
        settings.SIBLING_KMS_PROVIDERS,
        settings.SIBLING_KEY_VAULT_NAMESPACE,
        plain_client(),
        CODEC_OPTIONS,
    ).create_data_key(
        settings.SIBLING_KMS_PROVIDER,
        master_key=settings.SIBLING_KMS_MASTER_KEY,
        key_alt_names=[data_key_alt_name(user_id)],
    )
    assert sum(_left_of(user_id).values()) == 4

    assert _scheduled_sweeps_run() == 1
    assert set(_left_of(user_id).values()) == {0}


def test_an_erasure_with_nothing_racing_it_reports_no_late_writes(person, caplog):
    """The sweep's warning means a write raced the erasure: rows the account's own deletion
    removes (the person's ledger, here) are not reported as such."""
    data_key_ensure(person.pk)
    staff = UserFactory(is_staff=True)
    ledger_record(
        subject_id=person.pk, actor=staff, action="export", scope="everything", reason="request"
    )
    person_erase(user=person)
    assert not AccessLedgerEntry.objects.filter(subject_id=person.pk).exists()
    assert "late writes" not in caplog.text
