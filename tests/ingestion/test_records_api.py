"""GET /api/v1/records/ and /api/v1/connections/ with a person's own token: scopes, filters,
bad input, the cursor's order and its stability while records are written, the throttle, and the
queries the embedded server can answer from an index."""

from __future__ import annotations

import base64
import json
import threading
import time
from datetime import datetime, timedelta

import pytest
from bson import ObjectId

from ingestion import records_api
from ingestion.authentication import api_token_create, api_token_revoke
from ingestion.models import ApiToken
from ingestion.schemas import CATEGORY_COLLECTIONS
from ingestion.storage import records_collection
from sibling.people import person_of
from tests.factories import UserDataSourceFactory, UserFactory
from tests.ingestion.records_api_helpers import (
    CONNECTIONS_URL,
    RECORDS_URL,
    T0,
    get,
    kind_of,
    store,
    walk,
)

pytestmark = pytest.mark.django_db

READ = [ApiToken.Scope.RECORDS_READ]


@pytest.fixture(autouse=True)
def settled_at_once(settings):
    # Records are listed as soon as they are stored, except where a test sets a margin.
    settings.SIBLING_RECORDS_API_SETTLE_S = 0


@pytest.fixture
def person(db):
    return UserFactory()


@pytest.fixture
def secret(person):
    return api_token_create(user=person, name="Reader", scopes=READ).secret


# --- Who may read what -----------------------------------------------------------------------


def test_a_person_reads_their_records_decrypted(client, person, secret):
    store(person, kind_of("volunteered"), 2, data={"note": "slept badly"})
    store(person, kind_of("behavioral"), 1)
    response = get(client, RECORDS_URL, secret)
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"next", "previous", "results"}
    assert body["next"] is None and body["previous"] is None
    records = body["results"]
    assert len(records) == 3
    first = records[0]
    assert set(first) == {
        "id",
        "person",
        "category",
        "kind",
        "provider",
        "connection",
        "occurred_at",
        "data",
        "schema_version",
        "ingested_at",
        "updated_at",
    }
    assert {r["person"] for r in records} == {person_of(person).public_id}
    volunteered = [r for r in records if r["category"] == "volunteered"]
    assert volunteered[0]["data"]["note"] == "slept badly"
    assert volunteered[0]["connection"] is None
    assert {r["category"] for r in records} == {"volunteered", "behavioral"}


def test_the_record_detail(client, person, secret):
    store(person, kind_of("external"), 1, data={"subject": "hello"})
    listed = get(client, RECORDS_URL, secret).json()["results"][0]
    response = get(client, f"{RECORDS_URL}{listed['id']}/", secret)
    assert response.status_code == 200
    assert response.json() == listed


def test_another_persons_records_are_never_visible(client, person, secret):
    store(person, kind_of("volunteered"), 3)
    record_id = get(client, RECORDS_URL, secret).json()["results"][0]["id"]
    other = UserFactory()
    other_secret = api_token_create(user=other, name="Other", scopes=READ).secret
    assert get(client, RECORDS_URL, other_secret).json()["results"] == []
    # Their id, a random id and a malformed one answer alike.
    answers = [
        get(client, f"{RECORDS_URL}{record_id}/", other_secret),
        get(client, f"{RECORDS_URL}{ObjectId()}/", other_secret),
        get(client, f"{RECORDS_URL}not-an-id/", other_secret),
    ]
    assert [a.status_code for a in answers] == [404, 404, 404]
    assert len({a.content for a in answers}) == 1
    # Naming the first person's public id does not help.
    response = get(client, RECORDS_URL, other_secret, person=person_of(person).public_id)
    assert response.status_code == 400
    assert "person" in response.json()["fields"]
    assert get(client, CONNECTIONS_URL, other_secret).json()["results"] == []


def test_a_token_without_the_read_scope_is_refused(client, person):
    store(person, kind_of("volunteered"), 1)
    events_only = api_token_create(user=person, name="Old app").secret  # events:write alone
    for url in (RECORDS_URL, CONNECTIONS_URL, f"{RECORDS_URL}{ObjectId()}/"):
        response = get(client, url, events_only)
        assert response.status_code == 403, url
        assert "scope" in response.json()["error"]


def test_a_read_token_cannot_send_events(client, secret):
    response = client.post(
        "/api/events/",
        data={"events": []},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {secret}",
    )
    assert response.status_code == 403


def test_tokens_made_before_scopes_keep_sending_events_only(person):
    # The migration's default: what every earlier token could do, nothing more.
    token = ApiToken.objects.create(user=person, name="Old", digest="0" * 64, prefix="sib_0000")
    assert ApiToken.objects.get(pk=token.pk).scopes == ["events:write"]


@pytest.mark.parametrize("authorization", [None, "Bearer", "Bearer sib_nope", "Basic abc"])
def test_no_token_or_a_bad_one_is_401(client, person, authorization):
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    response = client.get(RECORDS_URL, **headers)
    assert response.status_code == 401
    assert "error" in response.json()


def test_a_revoked_token_is_401(client, person, secret):
    api_token_revoke(token=ApiToken.objects.get(user=person))
    assert get(client, RECORDS_URL, secret).status_code == 401


def test_a_session_is_not_enough(client, person):
    client.force_login(person, backend="django.contrib.auth.backends.ModelBackend")
    assert client.get(RECORDS_URL).status_code == 401


# --- Filters and bad input ----------------------------------------------------------------------


def test_filters(client, person, secret):
    volunteered, behavioral = kind_of("volunteered"), kind_of("behavioral")
    store(person, volunteered, 5)
    store(person, behavioral, 3)

    def listed(**params):
        return [(r["kind"], r["data"]["i"]) for r in walk(client, secret, **params)]

    assert sorted(listed(category="behavioral")) == [(behavioral, i) for i in range(3)]
    assert sorted(listed(kind=volunteered)) == [(volunteered, i) for i in range(5)]
    since, until = (T0 + timedelta(hours=1)).isoformat(), (T0 + timedelta(hours=2)).isoformat()
    assert sorted(listed(since=since, until=until)) == sorted(
        [(volunteered, 1), (volunteered, 2), (behavioral, 1), (behavioral, 2)]
    )
    assert listed(provider="sibling_app", category="volunteered", kind=behavioral) == []
    later = walk(client, secret)[-1]["updated_at"]  # the behavioral records' store
    store(person, volunteered, 1, start=10)
    # Inclusive: the last store before, and the new record.
    assert sorted(listed(changed_since=later)) == sorted(
        [(behavioral, 0), (behavioral, 1), (behavioral, 2), (volunteered, 10)]
    )


@pytest.mark.parametrize(
    "params, field",
    [
        ({"category": "bank"}, "category"),
        ({"kind": "no_such_kind"}, "kind"),
        ({"provider": "nobody"}, "provider"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2025-03-01T08:30:00"}, "since"),  # no offset
        ({"until": "2025-03-01T08:30:00 01:00"}, "until"),  # an unencoded +
        ({"changed_since": "2025-13-01T00:00:00Z"}, "changed_since"),
        ({"since": "2025-03-02T00:00:00Z", "until": "2025-03-01T00:00:00Z"}, "until"),
        ({"page_size": "501"}, "page_size"),
        ({"page_size": "0"}, "page_size"),
        ({"page_size": "ten"}, "page_size"),
        ({"cursor": "garbage"}, "cursor"),
        ({"cursor": "eyJ0IjoxfQ"}, "cursor"),  # base64 JSON without the fields
        ({"since": "0001-01-01T00:00:00+14:00"}, "since"),  # before year 1 in UTC
        ({"changed_since": "9999-12-31T23:59:59-14:00"}, "changed_since"),  # after 9999
    ],
)
def test_bad_filters_are_400_naming_the_field(client, secret, params, field):
    response = get(client, RECORDS_URL, secret, **params)
    assert response.status_code == 400, response.content
    body = response.json()
    assert list(body["fields"]) == [field]
    assert body["error"].startswith(f"{field}: ")


def test_a_page_holds_at_most_500(client, person, secret):
    store(person, kind_of("volunteered"), 501)
    body = get(client, RECORDS_URL, secret, page_size=500).json()
    assert len(body["results"]) == 500 and body["next"]
    default = get(client, RECORDS_URL, secret).json()
    assert len(default["results"]) == 100


# --- The cursor ----------------------------------------------------------------------------------


def _order(record: dict) -> tuple[str, str]:
    return record["updated_at"], record["id"]


def test_pages_follow_update_order_and_go_back(client, person, secret):
    for start in range(0, 250, 50):  # five stores, five update times
        store(person, kind_of("volunteered"), 50, start=start)
    first = get(client, RECORDS_URL, secret, page_size=100).json()
    second = client.get(first["next"], HTTP_AUTHORIZATION=f"Bearer {secret}").json()
    back = client.get(second["previous"], HTTP_AUTHORIZATION=f"Bearer {secret}").json()
    assert [r["id"] for r in back["results"]] == [r["id"] for r in first["results"]]
    everything = walk(client, secret, page_size=100)
    assert len(everything) == 250
    assert len({r["id"] for r in everything}) == 250
    assert everything == sorted(everything, key=_order)
    # Rewriting a record moves it to the end of the order.
    store(person, kind_of("volunteered"), 1, start=0)
    assert walk(client, secret, page_size=100)[-1]["data"]["i"] == 0


def test_records_within_the_settle_margin_wait_for_the_next_pass(client, person, secret, settings):
    settings.SIBLING_RECORDS_API_SETTLE_S = 60
    store(person, kind_of("volunteered"), 2)
    assert get(client, RECORDS_URL, secret).json()["results"] == []
    settings.SIBLING_RECORDS_API_SETTLE_S = 0
    assert len(get(client, RECORDS_URL, secret).json()["results"]) == 2


def test_a_forged_cursor_cannot_move_the_horizon(client, person, secret, settings):
    settings.SIBLING_RECORDS_API_SETTLE_S = 60
    store(person, kind_of("volunteered"), 2)
    forged = records_api.Position(
        at=T0 - timedelta(days=3650),
        id=records_api.MAX_ID,
        reverse=False,
        window_ms=1000,
        horizon=T0 + timedelta(days=36500),
    ).encode()
    assert get(client, RECORDS_URL, secret, cursor=forged).json()["results"] == []


def test_paging_while_a_writer_stores_records(client, person, secret, settings):
    """A reader pages while a writer stores new records and rewrites old ones through the
    pipeline's store. Every record stored before the pass (by more than the settle margin) and
    not rewritten during it is listed exactly once; none is listed twice at the same update
    time; the order never goes back."""
    settings.SIBLING_RECORDS_API_SETTLE_S = 1
    kind = kind_of("volunteered")
    for start in range(0, 300, 100):
        store(person, kind, 100, start=start)
    before = {f"{kind}-{i}" for i in range(300)}
    time.sleep(1.2)  # the records above are now settled
    rewritten: set[str] = set()
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            step = 0
            while not stop.is_set():
                store(person, kind, 5, start=1000 + step * 5)  # new records
                store(person, kind, 3, start=(step * 37) % 300)  # rewrites of old ones
                rewritten.update(f"{kind}-{(step * 37) % 300 + j}" for j in range(3))
                step += 1
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        seen: list[dict] = []
        response = get(client, RECORDS_URL, secret, page_size=20)
        pages = 0
        while True:
            body = response.json()
            seen += body["results"]
            pages += 1
            if not body["next"]:
                break
            response = client.get(body["next"], HTTP_AUTHORIZATION=f"Bearer {secret}")
            assert response.status_code == 200
    finally:
        stop.set()
        thread.join()
    assert not errors
    assert pages > 10
    ids = [r["data"]["i"] for r in seen]
    external = {f"{kind}-{i}" for i in ids}
    assert before - rewritten <= external, sorted(before - rewritten - external)[:5]
    sightings = [(r["id"], r["updated_at"]) for r in seen]
    assert len(sightings) == len(set(sightings)), "a record listed twice at one update time"
    assert seen == sorted(seen, key=_order)


def test_passes_resumed_from_the_last_update_seen_miss_nothing_while_two_writers_store(
    client, person, secret, settings
):
    """Two syncs store pages at once (each page stamped when its store begins, written in
    chunks); a consumer runs pass after pass, each from the last ``updated_at`` it saw. The
    settle margin keeps a pass from listing past a page still being written, so once the writers
    stop, the consumer has seen every record."""
    # The production margin: a page write on a loaded machine (threads contending for the GIL)
    # can outlast a shorter one, which is what the margin exists to cover.
    settings.SIBLING_RECORDS_API_SETTLE_S = 5
    kinds = [kind_of("volunteered"), kind_of("behavioral")]
    errors: list[BaseException] = []

    def writer(kind: str) -> None:
        try:
            for start in range(0, 1200, 150):  # pages of 150: three chunks each
                store(person, kind, 150, start=start)
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(kind,)) for kind in kinds]
    for thread in threads:
        thread.start()
    seen: set[tuple[str, int]] = set()
    last = None

    def one_pass() -> None:
        nonlocal last
        params = {"page_size": 100, **({"changed_since": last} if last else {})}
        for record in walk(client, secret, **params):
            seen.add((record["kind"], record["data"]["i"]))
            last = max(last or "", record["updated_at"])

    while any(thread.is_alive() for thread in threads):
        one_pass()
    for thread in threads:
        thread.join()
    assert not errors
    time.sleep(5.2)  # the last pages settle
    one_pass()
    assert seen == {(kind, i) for kind in kinds for i in range(1200)}


# --- Connections ---------------------------------------------------------------------------------


def test_connections_never_show_credentials_or_labels(client, person, secret):
    connection = UserDataSourceFactory(user=person, account_label="me@private.example")
    response = get(client, CONNECTIONS_URL, secret)
    assert response.status_code == 200
    (listed,) = response.json()["results"]
    assert listed["id"] == str(connection.pk)
    assert listed["provider"] == connection.provider
    assert set(listed) == {
        "id",
        "person",
        "provider",
        "provider_name",
        "category",
        "status",
        "last_success_at",
        "records_stored",
        "sync_interval_s",
        "next_sync_at",
        "backfill_progress",
        "created_at",
    }
    text = response.content.decode()
    assert "private.example" not in text
    assert connection.credentials["api_key"] not in text


# --- Throttle -----------------------------------------------------------------------------------


def test_each_token_has_its_own_throttle(client, person, secret, settings):
    settings.SIBLING_RECORDS_API_RATE = "2/min"
    assert get(client, RECORDS_URL, secret).status_code == 200
    assert get(client, RECORDS_URL, secret).status_code == 200
    refused = get(client, RECORDS_URL, secret)
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) > 0
    assert "error" in refused.json()
    other = api_token_create(user=person, name="Second", scopes=READ).secret
    assert get(client, RECORDS_URL, other).status_code == 200


def _cursor(payload: object) -> str:
    raw = json.dumps(payload).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        _cursor([1, 2]),
        _cursor("text"),
        _cursor({"t": "x", "i": "0" * 24, "r": 0, "w": 1, "h": 1}),
        _cursor({"t": 1, "i": 7, "r": 0, "w": 1, "h": 1}),
        _cursor({"t": 1, "i": {"$gt": ""}, "r": 0, "w": 1, "h": 1}),
        _cursor({"t": 1, "i": "z" * 24, "r": 0, "w": 1, "h": 1}),
        _cursor({"t": -1, "i": "0" * 24, "r": 0, "w": 1, "h": 1}),
        _cursor({"t": 10**20, "i": "0" * 24, "r": 0, "w": 1, "h": 1}),
        _cursor({"t": 1, "i": "0" * 24, "r": 0, "w": "wide", "h": 1}),
        _cursor({"t": 1, "i": "0" * 24, "r": 0, "w": 1, "h": [1]}),
        _cursor({"t": 1, "i": "0" * 24, "r": 0, "w": 1}),
        base64.urlsafe_b64encode(b'{"t":1e999,"i":"' + b"0" * 24 + b'","r":0,"w":1,"h":1}')
        .decode()
        .rstrip("="),
        base64.urlsafe_b64encode(b'{"t":1,"i":"' + b"0" * 24 + b'","r":0,"w":NaN,"h":1}')
        .decode()
        .rstrip("="),
        base64.urlsafe_b64encode(b"\xff\xfe not json").decode(),
        "é" * 8,
        "a" * 401,
    ],
)
def test_a_tampered_cursor_is_400(client, person, secret, cursor):
    store(person, kind_of("volunteered"), 2)
    response = get(client, RECORDS_URL, secret, cursor=cursor)
    assert response.status_code == 400, response.content
    assert list(response.json()["fields"]) == ["cursor"]


@pytest.mark.parametrize(
    "payload",
    [
        {"t": 0, "r": 0, "w": 1},  # from the epoch, forward, the narrowest window
        {"t": 253402300799999, "r": 1, "w": 2**60},  # from year 9999, backward, the widest
        {"t": 0, "r": 1, "w": 1},  # backward from before anything
    ],
)
def test_a_well_formed_forged_cursor_reads_only_the_callers_records(
    client, person, secret, payload
):
    store(person, kind_of("volunteered"), 3)
    other = UserFactory()
    store(other, kind_of("volunteered"), 3)
    forged = _cursor({"i": str(records_api.MIN_ID), "h": 253402300799999, **payload})
    response = get(client, RECORDS_URL, secret, cursor=forged)
    assert response.status_code == 200, response.content
    own = person_of(person).public_id
    assert {r["person"] for r in response.json()["results"]} <= {own}


def test_links_from_a_window_edge_keep_the_records_stamped_at_it(client, person, secret):
    # A page cut short by the work budget links on from a window's edge, (time, highest id)
    # going forward or (time, lowest id) going back; its link the other way starts there too.
    store(person, kind_of("volunteered"), 3)
    stamped = walk(client, secret)
    at = datetime.fromisoformat(stamped[0]["updated_at"])
    horizon = at + timedelta(days=1)
    edges = [
        records_api.Position(at, records_api.MAX_ID, True, 1000, horizon),
        records_api.Position(at, records_api.MIN_ID, False, 1000, horizon),
    ]
    for edge in edges:
        body = get(client, RECORDS_URL, secret, cursor=edge.encode()).json()
        assert [r["id"] for r in body["results"]] == [r["id"] for r in stamped], edge


# --- Queries the embedded server can index ------------------------------------------------------


def test_every_records_query_starts_with_the_person_and_uses_an_index(
    client, person, secret, monkeypatch
):
    for start in range(0, 60, 20):
        store(person, kind_of("volunteered"), 20, start=start)
    store(person, kind_of("behavioral"), 5)
    filters: list[tuple[str, dict]] = []
    real = records_api.records_collection

    class Watched:
        def __init__(self, name):
            self.name, self.collection = name, real(name)

        def find(self, filter_, *args, **kwargs):
            filters.append((self.name, filter_))
            return self.collection.find(filter_, *args, **kwargs)

        def find_one(self, filter_, *args, **kwargs):
            filters.append((self.name, filter_))
            return self.collection.find_one(filter_, *args, **kwargs)

    monkeypatch.setattr(records_api, "records_collection", Watched)
    records = walk(client, secret, page_size=7, kind=kind_of("volunteered"))
    assert len(records) == 60
    get(client, f"{RECORDS_URL}{records[0]['id']}/", secret)
    assert filters
    for name, filter_ in filters:
        assert name in CATEGORY_COLLECTIONS.values()
        if set(filter_) == {"_id"}:  # a record by id: the _id index
            plan = records_collection(name).find(filter_).explain()
        else:
            assert next(iter(filter_)) == "user"
            assert set(filter_) <= {"user", "updated_at", "_id"}
            plan = (
                records_collection(name)
                .find(filter_)
                .sort([("updated_at", 1), ("_id", 1)])
                .explain()
            )
        assert "COLLSCAN" not in str(plan["queryPlanner"]["winningPlan"]), (filter_, plan)


# --- The tokens page -----------------------------------------------------------------------------


def test_the_tokens_page_lets_a_person_choose_the_read_scope(client, person):
    client.force_login(person, backend="django.contrib.auth.backends.ModelBackend")
    page = client.get("/settings/api-tokens/").content.decode()
    assert 'value="records:read"' in page and 'value="events:write"' in page
    response = client.post(
        "/settings/api-tokens/", {"name": "Dashboard", "scopes": ["records:read"]}
    )
    secret = response.content.decode().split('id="new-token" value="')[1].split('"')[0]
    assert ApiToken.objects.get(name="Dashboard").scopes == ["records:read"]
    assert get(client, RECORDS_URL, secret).status_code == 200
    # Nothing ticked: sending events, as every token could before scopes.
    client.post("/settings/api-tokens/", {"name": "Phone"})
    assert ApiToken.objects.get(name="Phone").scopes == ["events:write"]
    page = client.get("/settings/api-tokens/").content.decode()
    assert "Read my records and connections" in page


def test_an_unexpected_failure_is_503_and_logged_as_the_records_api(
    client, secret, monkeypatch, caplog
):
    def broken(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(records_api, "records_page", broken)
    with caplog.at_level("ERROR"):
        response = get(client, RECORDS_URL, secret)
    assert response.status_code == 503
    assert response.json() == {"error": "Temporarily unavailable, please retry."}
    (logged,) = [r for r in caplog.records if r.name == "ingestion.api"]
    assert "RecordsListApi" in logged.getMessage() and logged.exc_info
