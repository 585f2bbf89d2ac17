"""The My data page (the day-by-day summary of a person's measures in their time zone, a chart
per measure, the latest records of each kind paged, counts, volunteered entries) and the
streamed export of everything a person's data holds."""

from __future__ import annotations

import io
import json
import re
import uuid
import zipfile
from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from bson import Binary
from django.test import Client
from django.utils import timezone
from django.utils.html import escape

from ingestion import mydata
from ingestion.events import PROVIDER as EVENTS_PROVIDER
from ingestion.events import events_accept
from ingestion.export import export_stream
from ingestion.fence import data_key_ensure
from ingestion.mydata import (
    CHART_DAYS,
    CHART_HEIGHT,
    PAGE_SIZE,
    SUMMARY_DAYS,
    Measure,
    Part,
    measures_check,
)
from ingestion.runner import connection_sync
from ingestion.schemas import CATEGORY_COLLECTIONS, ProcessedPage, Record, record_validate
from ingestion.storage import page_store, records_collection
from sibling.encryption import value_decrypt
from sibling.people import person_of
from sources.providers import PROVIDERS
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


HONOLULU = "Pacific/Honolulu"  # UTC-10 all year: its days never match UTC's


def zone_set(user, name):
    person = person_of(user)
    person.time_zone = name
    person.save(update_fields=["time_zone"])


def provider_of(kind: str) -> str:
    """A registered source that produces ``kind`` (Sibling's own apps for the events API's)."""
    for provider in PROVIDERS.values():
        if any(declared.name == kind for declared in provider.kinds):
            return provider.id
    return EVENTS_PROVIDER


def store(user, kind, occurred_at, **data):
    """One record of ``kind`` stored for ``user`` as a sync or the events API stores it."""
    data_key_ensure(user.pk)
    external_id = f"test-{uuid.uuid4()}"
    page = ProcessedPage(records=[record_validate(Record(kind, external_id, occurred_at, data))])
    page_store(
        connection=None,
        stream="test",
        processed=page,
        user_id=user.pk,
        provider=provider_of(kind),
    )
    return external_id


def transaction(day, amount, currency):
    return {
        "transaction_id": f"t-{uuid.uuid4()}",
        "account_id": "a-1",
        "date": day.isoformat(),
        "amount": amount,
        "currency": currency,
        "name": "Corner shop",
        "pending": False,
    }


def calendar_event(start, *, end=None, all_day=False, **extra):
    return {
        "calendar_id": "primary",
        "event_id": f"e-{uuid.uuid4()}",
        "summary": "Catch-up",
        "attendees": [],
        "start": start,
        "end": end if end is not None else start + timedelta(minutes=30),
        "all_day": all_day,
        "status": "confirmed",
        **extra,
    }


def kind_page(response, kind):
    [page] = [page for page, _ in response.context["pages"] if page.kind == kind]
    return page


def page_links(response):
    return {page.kind: links for page, links in response.context["pages"]}


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
    assert len(records) > PAGE_SIZE
    counts = {(row.provider, row.kind): row.n for c in response.context["counts"] for row in c.rows}
    assert counts == {(provider, kind): len(records), ("sibling_app", "note"): 1}
    assert re.search(
        rf'data-provider="{provider}" data-kind="{kind}">.*?<td class="num">{len(records)}<',
        html,
    )

    # The newest records are shown decrypted, a page at a time; the rest are on later pages.
    newest = sorted(records, key=lambda d: d["occurred_at"], reverse=True)[:PAGE_SIZE]
    page = kind_page(response, kind)
    assert (page.page, page.pages, page.total) == (1, -(-len(records) // PAGE_SIZE), len(records))
    assert [r.occurred_at for r in page.records] == [d["occurred_at"] for d in newest]
    for document in newest:
        data = value_decrypt(document["sealed"], owner_id=person.pk)
        texts = [v for v in data.values() if isinstance(v, str) and len(v) >= 4]
        assert any(escape(text) in html for text in texts)
    assert "mine: call the dentist" in html
    assert "theirs" not in html and "someone else" not in html


def test_every_measure_reads_fields_its_kind_declares():
    assert measures_check() == []
    wrong = Measure("naps", "Naps", "minutes", (Part("sleep_session", field="nap_minutes"),))
    unknown = Measure("dreams", "Dreams", "count", (Part("dream"),))
    assert measures_check((wrong, unknown)) == [
        "naps: sleep_session has no field nap_minutes",
        "dreams: unknown kind dream",
    ]


def test_the_summary_adds_up_each_measure_per_day_in_the_persons_zone(client, person):
    zone_set(person, HONOLULU)
    zone = ZoneInfo(HONOLULU)
    today = timezone.now().astimezone(zone).date()
    d1, d2 = today - timedelta(days=1), today - timedelta(days=2)

    def at(day, hour, minute=0):
        return datetime.combine(day, time(hour, minute), tzinfo=zone).astimezone(UTC)

    def midnight(day):
        return at(day, 0)

    # A night from a wearable (and a nap) and the same night logged by hand: the sources tell
    # the same thing, so the larger figure counts (480 minutes), not the sum.
    store(person, "sleep_session", at(d2, 23), start=at(d2, 23), end=at(d1, 7), minutes_asleep=420)
    store(person, "sleep_session", at(d1, 15), start=at(d1, 15), end=at(d1, 16), minutes_asleep=60)
    store(person, "sleep_log", at(d2, 23), start=at(d2, 23), end=at(d1, 6, 30))
    store(person, "activity_day", midnight(d1), date=d1.isoformat(), steps=8000)
    store(person, "activity_day", midnight(today), date=today.isoformat(), steps=1234)
    store(
        person,
        "workout",
        at(d1, 18),
        sport_type="Run",
        start_time=at(d1, 18),
        moving_s=1800,
        elapsed_s=2000,
    )
    store(person, "workout", at(d1, 7), sport_type="Walk", start_time=at(d1, 7), elapsed_s=600)
    for amount, currency in ((12.5, "USD"), (7.5, "USD"), (-100, "USD"), (3, "EUR")):
        store(person, "transaction", midnight(d1), **transaction(d1, amount, currency))
    for hour, seconds, productivity in ((10, 1800, 2), (11, 600, 1), (12, 900, -1), (13, 900, 0)):
        store(
            person,
            "productivity_hour",
            at(d1, hour),
            hour=f"{d1}T{hour}:00:00",
            seconds=seconds,
            activity="editor",
            category="work",
            productivity=productivity,
        )
    for start, extra in (
        (
            at(d1, 9),
            {
                "attendees": [
                    {"email": "me@example.com", "self": True, "response_status": "accepted"}
                ]
            },
        ),
        (at(d1, 14), {}),
        (at(d1, 10), {"status": "cancelled"}),
        (at(d1, 11), {"event_type": "focusTime"}),
        (
            at(d1, 16),
            {
                "attendees": [
                    {"email": "me@example.com", "self": True, "response_status": "declined"}
                ]
            },
        ),
    ):
        store(person, "calendar_event", start, **calendar_event(start, **extra))
    all_day = midnight(d1)
    store(
        person,
        "calendar_event",
        all_day,
        **calendar_event(d1, end=today, all_day=True),
    )
    # Rated late in the evening, and just after midnight: in UTC both are the same day, in
    # the person's zone they are two.
    store(person, "mood_rating", at(d1, 8), rating=2)
    store(person, "mood_rating", at(d1, 23, 30), rating=4)
    store(person, "mood_rating", at(today, 0, 5), rating=5)
    assert at(d1, 23, 30).date() == at(today, 0, 5).date()
    # The resting rate where the source has one, the day's average otherwise.
    store(person, "heart_rate_day", midnight(d1), date=d1.isoformat(), resting_bpm=58, avg_bpm=75)
    store(person, "heart_rate_day", midnight(today), date=today.isoformat(), avg_bpm=70)
    store(person, "screen_time", midnight(d1), date=d1.isoformat(), app="Reader", seconds=3600)
    # Too old for the window, and someone else's: in no figure.
    store(person, "mood_rating", at(today - timedelta(days=CHART_DAYS + 3), 12), rating=1)
    stranger = UserFactory()
    store(stranger, "mood_rating", at(d1, 12), rating=1)
    store(stranger, "activity_day", midnight(d1), date=d1.isoformat(), steps=99999)

    response = login(client, person).get(URL)
    assert response.status_code == 200
    summary = response.context["summary"]
    assert summary.today == today and summary.zone == HONOLULU
    shown = {
        series.label: {figure.day: figure.shown for figure in series.recorded}
        for series in summary.series
    }
    assert shown == {
        "Sleep": {d1: "8 h 00 min"},
        "Steps": {d1: "8,000", today: "1,234"},
        "Workouts": {d1: "40 min"},
        "Spending (EUR)": {d1: "3.00 EUR"},
        "Spending (USD)": {d1: "20.00 USD"},
        "Productive time": {d1: "40 min"},
        "Meetings": {d1: "2"},
        "Mood": {d1: "3.0 of 5", today: "5.0 of 5"},
        "Heart rate": {d1: "58 bpm", today: "70 bpm"},
        "Screen time": {d1: "1 h 00 min"},
    }
    for series in summary.series:
        assert len(series.days) == CHART_DAYS
        assert series.days[-1].day == today
        assert series.days[0].day == today - timedelta(days=CHART_DAYS - 1)

    # The summary table leads, newest day first, with every measure's figure as text.
    html = response.content.decode()
    assert html.index('id="summary-table"') < html.index('id="charts"') < html.index('id="latest"')
    rows = response.context["summary_rows"]
    assert [label for label, _, _ in rows[:2]] == ["Today", "Yesterday"]
    assert len(rows) == SUMMARY_DAYS
    yesterday = re.search(rf'<tr data-day="{d1}">(.*?)</tr>', html, re.S).group(1)
    for text in ("8 h 00 min", "8,000", "40 min", "20.00 USD", "3.00 EUR", "2", "3.0 of 5"):
        assert f'<td class="num">{text}</td>' in yesterday
    # One chart per measure, its bars scaled to its own busiest day.
    steps = next(s for s in summary.series if s.key == "steps")
    assert {f.day: f.height for f in steps.days if f.height} == {
        d1: CHART_HEIGHT,
        today: round(CHART_HEIGHT * 1234 / 8000),
    }
    assert html.count('<svg class="chart"') == len(summary.series)
    assert (
        f"Average 4,617 over the 2 days with a figure; most 8,000 on {d1:%a} {d1.day} {d1:%b}."
        in html
    )
    assert f"40 min on {d1:%a} {d1.day} {d1:%b}, the only day with a figure." in html
    assert f'data-day="{d1}"><title>' in html
    # The latest records show their times on the person's clock.
    mood = kind_page(response, "mood_rating")
    assert [r.occurred_at.strftime("%Y-%m-%d %H:%M") for r in mood.records[:2]] == [
        f"{today} 00:05",
        f"{d1} 23:30",
    ]
    assert f"{today} 00:05</time>" in html


def test_the_same_instant_falls_on_the_day_of_each_persons_zone(db):
    instant = datetime.combine(timezone.now().date() - timedelta(days=2), time(6), tzinfo=UTC)
    days = {}
    for name in (HONOLULU, "Asia/Tokyo"):
        user = UserFactory()
        zone_set(user, name)
        store(user, "mood_rating", instant, rating=3)
        response = login(Client(), user).get(URL)
        [mood] = response.context["summary"].series
        [figure] = mood.recorded
        days[name] = figure.day
        assert figure.day == instant.astimezone(ZoneInfo(name)).date()
    assert days[HONOLULU] == days["Asia/Tokyo"] - timedelta(days=1)


def test_days_are_civil_days_across_a_clock_change_and_at_the_window_edges(person):
    """Paris on 25 October 2026, when clocks go back: a 25-hour day; the window's first day
    starts at local midnight."""
    paris = ZoneInfo("Europe/Paris")
    now = datetime(2026, 10, 26, 12, 0, tzinfo=UTC)

    def local(*args):
        return datetime(*args, tzinfo=paris).astimezone(UTC)

    first = date(2026, 10, 26) - timedelta(days=CHART_DAYS - 1)
    for when, rating in (
        (local(2026, 10, 25, 0, 30), 1),  # 22:30 UTC the day before
        (local(2026, 10, 25, 23, 30), 3),  # 22:30 UTC the same day: 25 hours later
        (local(2026, 10, 26, 0, 30), 5),
        (datetime.combine(first, time(0), tzinfo=paris).astimezone(UTC), 4),
        (datetime.combine(first, time(0), tzinfo=paris).astimezone(UTC) - timedelta(minutes=1), 2),
    ):
        store(person, "mood_rating", when, rating=rating)
    summary = mydata.summary(
        user=person, zone=paris, kinds={"mood_rating": "volunteered_data"}, now=now
    )
    [mood] = summary.series
    assert {f.day: f.value for f in mood.recorded} == {
        date(2026, 10, 25): 2.0,
        date(2026, 10, 26): 5.0,
        first: 4.0,
    }
    assert [day for day, _ in summary.rows][:2] == [date(2026, 10, 26), date(2026, 10, 25)]


def test_records_of_a_kind_are_paged_newest_first(client, person):
    now = timezone.now()
    notes = [store(person, "note", now - timedelta(minutes=n), text=f"note {n}") for n in range(23)]
    # Several records at one instant (an hour's activities) are paged without repeats.
    for n in range(12):
        store(person, "mood_rating", now - timedelta(hours=1), rating=1 + n % 5, note=f"m{n}")

    login(client, person)
    first = kind_page(client.get(URL), "note")
    assert (first.page, first.pages, first.total) == (1, 3, 23)
    assert [r.details for r in first.records] == [[("text", f"note {n}")] for n in range(10)]

    response = client.get(URL, {"note_page": "2", "mood_rating_page": "2"})
    second = kind_page(response, "note")
    assert [r.details for r in second.records] == [[("text", f"note {n}")] for n in range(10, 20)]
    links = page_links(response)
    assert links["note"]["newer"] == "?note_page=1&mood_rating_page=2#records-note"
    assert links["note"]["older"] == "?note_page=3&mood_rating_page=2#records-note"
    html = response.content.decode()
    assert "Page 2 of 3" in html and "note 12" in html and "note 2<" not in html
    assert escape(links["note"]["older"]) in html

    response = client.get(URL, {"note_page": "3"})
    last = kind_page(response, "note")
    assert [r.details for r in last.records] == [[("text", f"note {n}")] for n in range(20, 23)]
    assert list(page_links(response)["note"]) == ["newer"]
    # A page beyond the last, or not a number: the nearest page there is, never an error.
    for asked, expected in (("99", 3), ("0", 1), ("-4", 1), ("two", 1), ("9" * 40, 3)):
        response = client.get(URL, {"note_page": asked})
        assert response.status_code == 200
        assert kind_page(response, "note").page == expected

    moods = [
        note
        for page in ("1", "2")
        for record in kind_page(client.get(URL, {"mood_rating_page": page}), "mood_rating").records
        for name, note in record.details
        if name == "note"
    ]
    assert sorted(moods) == sorted(f"m{n}" for n in range(12))
    assert len(notes) == 23


def test_only_what_the_page_shows_is_decrypted(client, person, monkeypatch):
    now = timezone.now()
    for n in range(30):  # older than the charts' days: counted, never opened
        old = now - timedelta(days=CHART_DAYS + 10 + n)
        store(person, "sleep_log", old, start=old, end=old + timedelta(hours=7))
    for n in range(2):
        recent = now - timedelta(days=1 + n, hours=8)
        store(person, "sleep_log", recent, start=recent, end=recent + timedelta(hours=7))
    for n in range(15):
        store(person, "note", now - timedelta(minutes=n), text=f"note {n}")
    opened = []
    real = mydata.record_decode

    def counting(document, *, owner_id):
        opened.append(document["kind"])
        return real(document, owner_id=owner_id)

    monkeypatch.setattr(mydata, "record_decode", counting)
    response = login(client, person).get(URL)
    assert response.context["total"] == 47
    # The two recent nights for the summary, a page of each kind for the tables.
    assert Counter(opened) == {"sleep_log": 2 + PAGE_SIZE, "note": PAGE_SIZE}


def test_the_queries_keep_to_the_persons_records_index(person, monkeypatch):
    """Each read starts with the person and uses the (user, kind, occurred_at) index."""
    store(person, "mood_rating", timezone.now(), rating=3)
    kinds = mydata.kinds_of(mydata.record_counts(user=person))
    filters = []

    class Watched:
        def __init__(self, name):
            self.collection = records_collection(name)

        def find(self, query, *args, **kwargs):
            filters.append((self.collection, query))
            return self.collection.find(query, *args, **kwargs)

    monkeypatch.setattr(mydata, "records_collection", Watched)
    mydata.summary(user=person, zone=UTC, kinds={"mood_rating": "volunteered_data"})
    mydata.kind_pages(user=person, kinds=kinds, asked={}, zone=UTC)
    assert len(filters) == 2
    for collection, query in filters:
        # A flat filter, the person first: the embedded server's planner can use the index.
        assert list(query)[:2] == ["user", "kind"] and query["user"] == person.pk
        plan = collection.find(query).sort("occurred_at", -1).explain()
        assert "user_kind_time" in str(plan), plan


@pytest.mark.parametrize(
    "reader",
    [
        {},
        {"is_staff": True},
        {"is_staff": True, "is_superuser": True},
    ],
    ids=["person", "staff", "superuser"],
)
def test_another_person_sees_none_of_it(client, person, reader):
    """Someone else, staff and superusers included: My data is always the reader's own."""
    now = timezone.now()
    store(person, "mood_rating", now - timedelta(hours=2), rating=4, note="mine alone")
    store(
        person,
        "activity_day",
        now - timedelta(days=1),
        date=str((now - timedelta(days=1)).date()),
        steps=5000,
    )
    other = UserFactory(**reader)
    response = login(client, other).get(URL)
    assert response.status_code == 200
    assert response.context["summary"].series == []
    assert response.context["pages"] == []
    assert response.context["total"] == 0
    html = response.content.decode()
    assert "mine alone" not in html and "5,000" not in html and "<svg" not in html
    assert "Nothing to sum up" in html
    # Asking for the owner's pages by name shows nothing either.
    html = client.get(URL, {"mood_rating_page": "1", "activity_day_page": "1"}).content.decode()
    assert "mine alone" not in html


def test_the_page_carries_no_inline_style_or_script(client, person):
    store(person, "mood_rating", timezone.now(), rating=4)
    html = login(client, person).get(URL).content.decode()
    content = html[html.index('<main id="content"') :]
    assert "<style" not in content and " style=" not in content
    assert "<script" not in content
    assert '<link rel="stylesheet" href="/static/ingestion/my_data.css">' in html


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
        "utc_offset_min": 0,  # entered on a UTC clock, the person's zone by default
    }
    assert document["occurred_at"] == start
    # The page decrypts it for its owner.
    [page] = [p for p, _ in client.get(URL).context["pages"] if p.kind == "sleep_log"]
    [shown] = page.records
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
