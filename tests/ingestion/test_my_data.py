"""The My data page (counts, latest records, records per day, volunteered entries) and the
streamed export of everything a person's data holds."""

from __future__ import annotations

import io
import json
import re
import uuid
import zipfile
from collections import Counter
from datetime import UTC, timedelta

import pytest
from bson import Binary
from django.test import Client
from django.utils import timezone
from django.utils.html import escape

from ingestion.events import events_accept
from ingestion.export import export_stream
from ingestion.mydata import CHART_DAYS
from ingestion.runner import connection_sync
from ingestion.schemas import CATEGORY_COLLECTIONS
from ingestion.storage import records_collection
from sibling.encryption import value_decrypt
from tests.factories import UserFactory
from tests.ingestion.conftest import NO_WAIT, fresh

URL = "/my-data/"
EXPORT_URL = "/my-data/export/"
RECORD_FILES = [f"{name}.jsonl" for name in dict.fromkeys(CATEGORY_COLLECTIONS.values())]


def login(client, person):
    client.force_login(person, backend="django.contrib.auth.backends.ModelBackend")
    return client


def note_event(text, *, occurred_at=None):
    when = occurred_at or timezone.now()
    return {
        "id": f"test-{uuid.uuid4()}",
        "kind": "note",
        "occurred_at": when.astimezone(UTC).isoformat(),
        "data": {"text": text},
    }


def synced(connection):
    run = connection_sync(connection.pk, policy=NO_WAIT)
    assert run.outcome == "success", run.error_message
    return run


def raw_records(user, collection="volunteered_data", **query):
    return list(records_collection(collection).find({"user": user.pk, **query}))


def export_archive(client) -> tuple[bytes, zipfile.ZipFile]:
    response = client.post(EXPORT_URL)
    assert response.status_code == 200
    assert response.streaming is True
    body = b"".join(response.streaming_content)
    return body, zipfile.ZipFile(io.BytesIO(body))


def jsonl(archive, name):
    return [json.loads(line) for line in archive.read(name).decode().splitlines()]


def secret_strings(value) -> list[str]:
    """Every string inside a credentials value long enough to be a token or key."""
    if isinstance(value, str):
        return [value] if len(value) >= 8 else []
    if isinstance(value, dict):
        return [s for item in value.values() for s in secret_strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in secret_strings(item)]
    return []


# --- the page ------------------------------------------------------------------------------


def test_page_needs_login(client, db):
    response = client.get(URL)
    assert response.status_code == 302 and "/login/" in response["Location"]
    assert client.post(EXPORT_URL).status_code == 302


def test_nav_links_to_my_data(client, person):
    response = login(client, person).get("/settings/privacy/")
    assert b'href="/my-data/">My data</a>' in response.content


@pytest.mark.django_db(transaction=True)
def test_page_shows_counts_and_latest_records_decrypted_for_the_owner_only(
    client, link_connection, person
):
    synced(link_connection)
    events_accept(user=person, events=[note_event("mine: call the dentist")])
    other = UserFactory()
    events_accept(user=other, events=[note_event("theirs: a secret of someone else")])

    response = login(client, person).get(URL)
    assert response.status_code == 200
    html = response.content.decode()

    provider = link_connection.provider
    collection = f"{link_connection.provider_class.category}_data"
    kind = raw_records(person, collection)[0]["kind"]
    records = raw_records(person, collection, kind=kind)
    assert len(records) > 10
    counts = {(row.provider, row.kind): row.n for c in response.context["counts"] for row in c.rows}
    assert counts == {(provider, kind): len(records), ("sibling_app", "note"): 1}
    assert re.search(
        rf'data-provider="{provider}" data-kind="{kind}">.*?<td class="num">{len(records)}<',
        html,
    )

    # The newest records are shown decrypted; the rest are in the export, not here.
    newest = sorted(records, key=lambda d: d["occurred_at"], reverse=True)[:10]
    shown = response.context["latest"][kind]
    assert len(shown) == 10
    assert [r.occurred_at for r in shown] == [d["occurred_at"] for d in newest]
    for document in newest:
        data = value_decrypt(document["sealed"], owner_id=person.pk)
        texts = [v for v in data.values() if isinstance(v, str) and len(v) >= 4]
        assert any(escape(text) in html for text in texts)
    assert "mine: call the dentist" in html
    assert "theirs" not in html and "someone else" not in html


def test_chart_counts_records_per_day_over_the_last_30_days(client, person):
    now = timezone.now()
    events_accept(
        user=person,
        events=[
            note_event("today"),
            note_event("three days ago, one", occurred_at=now - timedelta(days=3)),
            note_event("three days ago, two", occurred_at=now - timedelta(days=3)),
            note_event("too old to show", occurred_at=now - timedelta(days=CHART_DAYS + 5)),
        ],
    )
    events_accept(user=UserFactory(), events=[note_event("someone else's, today")])

    response = login(client, person).get(URL)
    chart = response.context["chart"]
    assert len(chart) == CHART_DAYS
    today = now.astimezone(UTC).date()
    assert chart[-1].day == today.isoformat()
    assert chart[0].day == (today - timedelta(days=CHART_DAYS - 1)).isoformat()
    per_day = {bar.day: bar.n for bar in chart}
    three_days_ago = (today - timedelta(days=3)).isoformat()
    assert per_day[today.isoformat()] == 1
    assert per_day[three_days_ago] == 2
    assert sum(per_day.values()) == 3
    assert {bar.day: bar.pct for bar in chart}[three_days_ago] == 100

    html = response.content.decode()
    assert 'role="img"' in html and 'aria-label="Bar chart of records per day' in html
    # The numbers are there as text too, not only as bar heights.
    assert re.search(rf'data-day="{three_days_ago}">.*?<td class="num">2</td>', html)
    assert re.search(rf'data-day="{today.isoformat()}">.*?<td class="num">1</td>', html)


# --- volunteered entries -------------------------------------------------------------------


def test_a_mood_rating_is_stored_with_its_note_sealed(client, person):
    response = login(client, person).post(
        URL, {"entry": "mood_rating", "mood_rating-rating": "4", "mood_rating-note": "tired"}
    )
    assert response.status_code == 302 and response["Location"] == URL
    [document] = raw_records(person, kind="mood_rating")
    assert document["provider"] == "sibling_app" and document["external_id"].startswith("web-")
    # The rating is personal too: the whole entry is sealed, only the envelope is readable.
    assert "data" not in document
    assert isinstance(document["sealed"], Binary) and document["sealed"].subtype == 6
    assert value_decrypt(document["sealed"], owner_id=person.pk) == {"rating": 4, "note": "tired"}
    assert "Saved" in client.get(URL).content.decode()


def test_a_note_is_stored_sealed(client, person):
    login(client, person).post(URL, {"entry": "note", "note-text": "talked to my sister"})
    [document] = raw_records(person, kind="note")
    assert "data" not in document
    assert isinstance(document["sealed"], Binary) and document["sealed"].subtype == 6
    assert value_decrypt(document["sealed"], owner_id=person.pk) == {"text": "talked to my sister"}
    assert b"talked to my sister" not in Binary(document["sealed"])
    assert "talked to my sister" in client.get(URL).content.decode()


def test_a_sleep_log_is_stored(client, person):
    end = (timezone.now() - timedelta(hours=2)).replace(second=0, microsecond=0)
    start = end - timedelta(hours=7, minutes=30)
    login(client, person).post(
        URL,
        {
            "entry": "sleep_log",
            "sleep_log-start": start.strftime("%Y-%m-%dT%H:%M"),
            "sleep_log-end": end.strftime("%Y-%m-%dT%H:%M"),
            "sleep_log-quality": "3",
        },
    )
    [document] = raw_records(person, kind="sleep_log")
    # How a person slept is theirs alone: sealed, with only when it began in the envelope.
    assert "data" not in document
    assert value_decrypt(document["sealed"], owner_id=person.pk) == {
        "start": start,
        "end": end,
        "quality": 3,
    }
    assert document["occurred_at"] == start
    # The page decrypts it for its owner.
    [shown] = client.get(URL).context["latest"]["sleep_log"]
    assert ("quality", "3") in shown.details


@pytest.mark.parametrize(
    ("post", "field", "message"),
    [
        ({"entry": "mood_rating"}, "rating", "This field is required."),
        ({"entry": "mood_rating", "mood_rating-rating": "7"}, "rating", "Select a valid choice"),
        ({"entry": "note", "note-text": "   "}, "text", "This field is required."),
        (
            {
                "entry": "sleep_log",
                "sleep_log-start": "2025-03-01T07:00",
                "sleep_log-end": "2025-03-01T06:00",
            },
            "end",
            "must be after",
        ),
        (
            {"entry": "sleep_log", "sleep_log-start": "last night", "sleep_log-end": ""},
            "start",
            "Enter a valid date/time.",
        ),
        (
            {
                "entry": "sleep_log",
                "sleep_log-start": "2025-03-01T07:00",
                "sleep_log-end": "2025-03-01T06:00",
                "sleep_log-quality": "9",
            },
            "quality",
            "Select a valid choice",
        ),
    ],
)
def test_invalid_entries_give_form_errors_and_store_nothing(client, person, post, field, message):
    response = login(client, person).post(URL, post)
    assert response.status_code == 400
    form = response.context["forms"][post["entry"]]
    assert any(message in error for error in form.errors[field])
    html = response.content.decode()
    assert 'role="alert"' in html and 'class="errorlist' in html
    assert escape(form.errors[field][0]) in html
    assert raw_records(person) == []


def test_a_sleep_log_in_the_future_is_refused(client, person):
    start = timezone.now() + timedelta(hours=1)
    response = login(client, person).post(
        URL,
        {
            "entry": "sleep_log",
            "sleep_log-start": start.strftime("%Y-%m-%dT%H:%M"),
            "sleep_log-end": (start + timedelta(hours=8)).strftime("%Y-%m-%dT%H:%M"),
        },
    )
    assert response.status_code == 400
    assert "cannot be in the future" in response.content.decode()
    assert raw_records(person) == []


def test_form_and_export_need_csrf(person):
    client = login(Client(enforce_csrf_checks=True), person)
    assert client.post(URL, {"entry": "note", "note-text": "no token"}).status_code == 403
    assert client.post(EXPORT_URL).status_code == 403
    assert raw_records(person) == []

    page = client.get(URL)
    token = page.cookies["csrftoken"].value
    assert 'name="csrfmiddlewaretoken"' in page.content.decode()
    answer = client.post(
        URL, {"entry": "note", "note-text": "with a token", "csrfmiddlewaretoken": token}
    )
    assert answer.status_code == 302
    assert len(raw_records(person)) == 1
    export = client.post(EXPORT_URL, {"csrfmiddlewaretoken": token})
    assert export.status_code == 200 and export.streaming


def test_export_needs_post(client, person):
    assert login(client, person).get(EXPORT_URL).status_code == 405


# --- the export ----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_export_streams_everything_decrypted_without_secrets(
    client, link_connection, key_connection, person
):
    synced(link_connection)
    synced(key_connection)
    link, key = link_connection.provider, key_connection.provider
    events_accept(user=person, events=[note_event("mine: buy oat milk")])
    events_accept(user=UserFactory(), events=[note_event("theirs: do not export me")])

    login(client, person)
    response = client.post(EXPORT_URL)
    assert response.status_code == 200
    assert response.streaming is True
    assert response["Content-Type"] == "application/zip"
    today = timezone.now().strftime("%Y%m%d")
    assert response["Content-Disposition"] == (f'attachment; filename="sibling-export-{today}.zip"')
    chunks = list(response.streaming_content)
    assert len(chunks) > 1  # handed on as written, not as one finished archive
    body = b"".join(chunks)
    archive = zipfile.ZipFile(io.BytesIO(body))
    assert archive.testzip() is None
    names = archive.namelist()
    assert set(names) == {
        "connections.jsonl",
        *RECORD_FILES,
        "sync_runs.jsonl",
        "ledger.jsonl",
        "README.txt",
    }
    # Streamed members carry their sizes in a data descriptor (flag bit 3).
    assert all(info.flag_bits & 0x08 for info in archive.infolist())

    readme = archive.read("README.txt").decode()
    for name in names:
        assert name in readme

    connections = jsonl(archive, "connections.jsonl")
    assert {c["provider"] for c in connections} == {link, key}
    linked = next(c for c in connections if c["provider"] == link)
    assert linked["account_label"] == link_connection.account_label
    assert linked["status"] == "active"
    assert linked["synced_streams"] and linked["last_success_at"]
    for connection in connections:
        assert not {"credentials", "cursors", "external_lookup"} & set(connection)

    # Every record of the person, each decrypted, nothing of anyone else.
    for name in dict.fromkeys(CATEGORY_COLLECTIONS.values()):
        exported = jsonl(archive, f"{name}.jsonl")
        stored = raw_records(person, name)
        assert len(exported) == len(stored)
        assert {r["id"] for r in exported} == {str(d["_id"]) for d in stored}
        assert all("sealed" not in r for r in exported)
    link_collection = f"{link_connection.provider_class.category}_data"
    linked_records = [
        r for r in jsonl(archive, f"{link_collection}.jsonl") if r["provider"] == link
    ]
    assert linked_records and all(r["data"] for r in linked_records)
    by_id = {r["external_id"]: r for r in linked_records}
    for document in raw_records(person, link_collection, provider=link)[:20]:
        sealed = value_decrypt(document["sealed"], owner_id=person.pk)
        record = by_id[document["external_id"]]
        assert "data" not in document  # every value is sealed; the export decrypts them
        assert record["data"] == sealed
        assert record["occurred_at"] == document["occurred_at"].isoformat()
        assert record["connection"] == str(link_connection.pk)
    key_collection = f"{key_connection.provider_class.category}_data"
    keyed = [r for r in jsonl(archive, f"{key_collection}.jsonl") if r["provider"] == key]
    assert keyed and all(r["data"] for r in keyed)
    [note] = jsonl(archive, "volunteered_data.jsonl")
    assert note["data"] == {"text": "mine: buy oat milk"}

    runs = jsonl(archive, "sync_runs.jsonl")
    assert Counter(r["provider"] for r in runs) == {link: 1, key: 1}
    assert all(r["outcome"] == "success" for r in runs)

    # The export itself is in the person's access ledger (written before the archive).
    ledger = jsonl(archive, "ledger.jsonl")
    assert [e["action"] for e in ledger] == ["export"]
    assert ledger[0]["actor_id"] == str(person.pk)

    contents = b"".join(archive.read(name) for name in names)
    assert b"theirs" not in contents and b"do not export me" not in contents
    secrets = [
        s
        for connection in (link_connection, key_connection)
        for s in secret_strings(fresh(connection).credentials)
    ]
    assert secrets
    for secret in secrets:
        assert secret.encode() not in body
        assert secret.encode() not in contents


def test_export_of_a_person_without_data_is_a_valid_archive(person):
    archive = zipfile.ZipFile(io.BytesIO(b"".join(export_stream(user=person))))
    assert archive.testzip() is None
    for name in ["connections.jsonl", *RECORD_FILES, "sync_runs.jsonl"]:
        assert archive.read(name) == b""
    assert archive.read("README.txt").startswith(b"Your data at Sibling")


def test_export_stream_without_the_ledger_model_skips_its_file(person, monkeypatch):
    import ingestion.models

    monkeypatch.delattr(ingestion.models, "AccessLedgerEntry")
    names = zipfile.ZipFile(io.BytesIO(b"".join(export_stream(user=person)))).namelist()
    assert "ledger.jsonl" not in names
    assert "README.txt" in names
