"""POST /api/events/ and the API tokens page: tokens, validation, storage, idempotency, schema."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

import pytest
from bson import Binary, ObjectId
from django.test import Client
from schemathesis import GenerationMode

from ingestion.authentication import api_token_create, token_digest
from ingestion.events import batch_dedup_key
from ingestion.models import ApiToken, QuarantinedItem, WebhookEvent
from sibling.encryption import value_decrypt
from tests.api_schema import schema_statuses
from tests.factories import UserFactory
from tests.sources.providers.kit import provider_with

URL = "/api/events/"
TOKENS_URL = "/settings/api-tokens/"


@pytest.fixture
def signed_in(client, person):
    client.force_login(person, backend="django.contrib.auth.backends.ModelBackend")
    return client


@pytest.fixture
def token(person):
    return api_token_create(user=person, name="Phone").secret


def post(client, body, token=None, **extra):
    if token is not None:
        extra["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post(URL, data=data, content_type="application/json", **extra)


def event(id_, kind, data, occurred_at="2025-03-01T08:30:00Z"):
    return {"id": id_, "kind": kind, "occurred_at": occurred_at, "data": data}


VALID = [
    event("m1", "mood_rating", {"rating": 4, "note": "slept badly, anxious"}),
    event("n1", "note", {"text": "talked to my sister", "tags": ["family"]}),
    event(
        "s1",
        "sleep_log",
        {"start": "2025-02-28T23:10:00+01:00", "end": "2025-03-01T07:00:00+01:00", "quality": 3},
    ),
    event("t1", "screen_time", {"date": "2025-03-01", "app": "Instagram", "seconds": 3600}),
]
INVALID = [
    (event("m2", "mood_rating", {"rating": 6}), "rating must be between 1 and 5"),
    (
        event(
            "s2",
            "sleep_log",
            {"start": "2025-03-01T07:00:00Z", "end": "2025-03-01T06:00:00Z"},
        ),
        "end must be after start",
    ),
    (
        event("t2", "screen_time", {"date": "2025-03-01", "app": "x", "seconds": -1}),
        "seconds must not be negative",
    ),
    (event("t3", "screen_time", {"date": "1 March", "app": "x", "seconds": 1}), "YYYY-MM-DD"),
    (event("x1", "horoscope", {}), "unknown kind"),
    (event("x2", "transaction", {}), "cannot be sent as an event"),
    (event("x3", "note", {"text": "hi"}, occurred_at="yesterday"), "occurred_at"),
    (event("x4", "note", {"text": "hi"}, occurred_at="2025-03-01T08:30:00"), "occurred_at"),
    (event("x5", "note", {"text": 5}), "text is not str"),
    (event("x6", "note", {"text": "hi", "mood": 1}), "unexpected fields"),
    ({"kind": "note", "occurred_at": "2025-03-01T08:30:00Z", "data": {"text": "no id"}}, "id"),
    ("not an object", "not an object"),
    (event("m1", "note", {"text": "same id again"}), "repeats an earlier event"),
]


def mixed_batch():
    return {"events": VALID + [item for item, _ in INVALID]}


# --- Tokens -------------------------------------------------------------------------------------


def test_tokens_page_needs_login(client, db):
    response = client.get(TOKENS_URL)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_token_is_shown_once_and_only_its_digest_is_stored(signed_in, person, raw_db):
    page = signed_in.get("/connections/")
    assert f'href="{TOKENS_URL}"' in page.content.decode()  # linked from the navigation

    created = signed_in.post(TOKENS_URL, {"name": "Sibling for iPhone"})
    assert created.status_code == 200
    assert "no-store" in created["Cache-Control"]
    secret = created.context["created"].secret
    assert secret.startswith("sib_") and len(secret) > 40
    assert secret in created.content.decode()

    again = signed_in.get(TOKENS_URL)
    html = again.content.decode()
    assert secret not in html
    assert "Sibling for iPhone" in html and secret[:8] in html

    documents = list(raw_db[ApiToken._meta.db_table].find({"user_id": person.pk}))
    assert len(documents) == 1
    document = documents[0]
    assert document["digest"] == hashlib.sha256(secret.encode()).hexdigest()
    assert document["prefix"] == secret[:8]
    assert secret not in json.dumps(document, default=str)


def test_token_form_needs_a_name(signed_in, person):
    response = signed_in.post(TOKENS_URL, {"name": "  "})
    assert response.status_code == 200
    assert response.context["created"] is None
    assert not ApiToken.objects.filter(user=person).exists()


def test_revoked_token_is_refused(signed_in, person, token):
    stored = ApiToken.objects.get(user=person)
    response = signed_in.post(f"{TOKENS_URL}{stored.pk}/revoke/")
    assert response.status_code == 302
    stored.refresh_from_db()
    assert stored.revoked_at is not None
    assert "Revoked" in signed_in.get(TOKENS_URL).content.decode()

    refused = post(Client(), {"events": VALID[:1]}, token)
    assert refused.status_code == 401
    assert refused.json() == {"error": "Invalid or revoked token."}


def test_another_persons_token_is_not_found(signed_in, db):
    other = api_token_create(user=UserFactory(), name="Theirs").token
    assert signed_in.post(f"{TOKENS_URL}{other.pk}/revoke/").status_code == 404
    assert signed_in.post(f"{TOKENS_URL}{ObjectId()}/revoke/").status_code == 404
    assert signed_in.post(f"{TOKENS_URL}not-an-id/revoke/").status_code == 404
    other.refresh_from_db()
    assert other.revoked_at is None
    assert "Theirs" not in signed_in.get(TOKENS_URL).content.decode()


def test_token_forms_need_csrf(person):
    client = Client(enforce_csrf_checks=True)
    client.force_login(person, backend="django.contrib.auth.backends.ModelBackend")
    token = api_token_create(user=person, name="Phone").token
    html = client.get(TOKENS_URL).content.decode()
    assert html.count("csrfmiddlewaretoken") >= 3  # log out, create, revoke

    assert client.post(TOKENS_URL, {"name": "Sneaky"}).status_code == 403
    assert client.post(f"{TOKENS_URL}{token.pk}/revoke/").status_code == 403
    assert ApiToken.objects.filter(user=person).count() == 1
    token.refresh_from_db()
    assert token.revoked_at is None


def test_revoke_needs_post(signed_in, token, person):
    stored = ApiToken.objects.get(user=person)
    assert signed_in.get(f"{TOKENS_URL}{stored.pk}/revoke/").status_code == 405


def test_last_used_is_written_at_most_once_a_minute(client, person, token):
    stored = ApiToken.objects.get(user=person)
    assert stored.last_used_at is None
    assert post(client, {"events": VALID[:1]}, token).status_code == 202
    stored.refresh_from_db()
    first = stored.last_used_at
    assert first is not None
    assert post(client, {"events": VALID[:1]}, token).status_code == 202
    stored.refresh_from_db()
    assert stored.last_used_at == first
    ApiToken.objects.filter(pk=stored.pk).update(last_used_at=first - timedelta(minutes=2))
    assert post(client, {"events": VALID[:1]}, token).status_code == 202
    stored.refresh_from_db()
    assert stored.last_used_at > first - timedelta(seconds=1)


# --- The API ------------------------------------------------------------------------------------


def test_mixed_batch_is_accepted_in_part(client, person, token, raw_db):
    response = post(client, mixed_batch(), token)

    assert response.status_code == 202, response.content
    body = response.json()
    assert body["accepted"] == len(VALID)
    rejected = body["rejected"]
    assert [r["index"] for r in rejected] == [len(VALID) + i for i in range(len(INVALID))]
    for answer, (item, reason) in zip(rejected, INVALID, strict=True):
        expected_id = item.get("id") if isinstance(item, dict) else None
        assert answer["id"] == expected_id
        assert reason in answer["reason"], (answer, reason)

    # Stored as one batch, processed at once (tasks run synchronously in tests).
    batch = WebhookEvent.objects.get(provider="events")
    assert batch.event_type == "batch"
    assert batch.user_id == person.pk
    assert batch.status == WebhookEvent.Status.PROCESSED
    assert batch.dedup_key == batch_dedup_key(person.pk, ["m1", "n1", "s1", "t1"])
    # Processed into records, the batch itself is gone (the records are the durable copy).
    assert batch.payload is None
    raw_batch = raw_db[WebhookEvent._meta.db_table].find_one({"_id": batch.pk})
    assert raw_batch["payload"] is None

    # Rejected events are kept in quarantine with their reason.
    quarantined = QuarantinedItem.objects.filter(user=person, provider="sibling_app")
    assert quarantined.count() == len(INVALID)
    assert all(q.connection_id is None and q.stream == "events" for q in quarantined)
    by_reason = {q.reason: q for q in quarantined}
    # Reasons are plaintext: the client's event id is named by a digest, never quoted.
    assert not any("'m2'" in reason for reason in by_reason)
    mood = next(q for q in quarantined if isinstance(q.item, dict) and q.item.get("id") == "m2")
    assert mood.reason.startswith("event id~")
    assert mood.kind == "mood_rating" and mood.item["data"] == {"rating": 6}


def test_records_keep_every_value_sealed(client, person, token, raw_db):
    assert post(client, mixed_batch(), token).status_code == 202
    owner = {"user": person.pk, "provider": "sibling_app"}

    volunteered = {d["kind"]: d for d in raw_db["volunteered_data"].find(owner)}
    behavioral = {d["kind"]: d for d in raw_db["behavioral_data"].find(owner)}
    assert set(volunteered) == {"mood_rating", "note", "sleep_log"}
    assert set(behavioral) == {"screen_time"}
    assert raw_db["external_data"].count_documents(owner) == 0

    mood, note = volunteered["mood_rating"], volunteered["note"]
    sleep, screen = volunteered["sleep_log"], behavioral["screen_time"]
    assert mood["external_id"] == "m1"
    assert mood["connection"] is None
    assert mood["occurred_at"] == datetime(2025, 3, 1, 8, 30, tzinfo=UTC)
    for document, secret in [
        (mood, {"rating": 4, "note": "slept badly, anxious"}),
        (note, {"text": "talked to my sister", "tags": ["family"]}),
        (
            sleep,
            {
                "start": datetime(2025, 2, 28, 22, 10, tzinfo=UTC),
                "end": datetime(2025, 3, 1, 6, 0, tzinfo=UTC),
                "quality": 3,
            },
        ),
        (screen, {"date": "2025-03-01", "app": "Instagram", "seconds": 3600}),
    ]:
        # Ratings, sleep times and screen time included: nothing but the envelope is readable.
        assert "data" not in document
        assert isinstance(document["sealed"], Binary) and document["sealed"].subtype == 6
        assert value_decrypt(document["sealed"], owner_id=person.pk) == secret
        for value in ("slept badly", "talked to my sister", "family", "Instagram"):
            assert value not in json.dumps(document, default=str)


def test_resent_batch_changes_nothing(client, person, token, raw_db):
    first = post(client, mixed_batch(), token)
    owner = {"user": person.pk, "provider": "sibling_app"}
    before = {
        name: sorted(
            (d["external_id"], d["updated_at"]) for d in raw_db[name].find(owner, {"_id": 0})
        )
        for name in ("volunteered_data", "behavioral_data")
    }

    second = post(client, mixed_batch(), token)

    assert second.status_code == 202
    assert second.json() == first.json()
    after = {
        name: sorted(
            (d["external_id"], d["updated_at"]) for d in raw_db[name].find(owner, {"_id": 0})
        )
        for name in ("volunteered_data", "behavioral_data")
    }
    assert after == before
    batch = WebhookEvent.objects.get(provider="events")
    assert batch.deliveries == 2 and batch.attempts == 1
    assert QuarantinedItem.objects.filter(user=person).count() == len(INVALID)


def test_events_of_two_people_stay_apart(client, person, token, raw_db):
    other = UserFactory()
    other_token = api_token_create(user=other, name="Theirs").secret
    assert post(client, {"events": VALID[:1]}, token).status_code == 202
    assert post(client, {"events": VALID[:1]}, other_token).status_code == 202
    assert WebhookEvent.objects.filter(provider="events").count() == 2
    for someone in (person, other):
        assert raw_db["volunteered_data"].count_documents({"user": someone.pk}) == 1


def test_a_batch_of_only_invalid_events_stores_no_batch(client, person, token):
    response = post(client, {"events": [INVALID[0][0]]}, token)
    assert response.status_code == 202
    assert response.json()["accepted"] == 0
    assert not WebhookEvent.objects.filter(provider="events").exists()
    assert QuarantinedItem.objects.filter(user=person).count() == 1


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Bearer sib_wrong", "Token whatever", "Basic cGVyc29uOnB3"],
)
def test_unauthenticated_requests_get_401(client, token, authorization):
    extra = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    response = post(client, {"events": VALID[:1]}, **extra)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert "error" in response.json()
    assert not WebhookEvent.objects.filter(provider="events").exists()


def test_a_session_is_not_enough(signed_in, db):
    assert post(signed_in, {"events": VALID[:1]}).status_code == 401


def test_malformed_json_is_400(client, token):
    response = post(client, b'{"events": [', token)
    assert response.status_code == 400
    assert response.json()["error"].startswith("JSON parse error")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"events": []}, "events:"),
        ({}, "events: This field is required."),
        ([VALID[0]], "Expected a dictionary"),
        ({"events": {"id": "x"}}, "events:"),
    ],
)
def test_invalid_bodies_are_400(client, token, body, message):
    response = post(client, body, token)
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_more_than_500_events_is_400(client, person, token):
    events = [event(f"m{i}", "mood_rating", {"rating": 3}) for i in range(501)]
    response = post(client, {"events": events}, token)
    assert response.status_code == 400
    assert "no more than 500" in response.json()["error"]
    assert not WebhookEvent.objects.filter(provider="events").exists()

    assert post(client, {"events": events[:500]}, token).json()["accepted"] == 500


def test_deeply_nested_json_is_400(client, token):
    response = post(client, b"[" * 100_000 + b"]" * 100_000, token)
    assert response.status_code == 400


def test_values_mongodb_cannot_store_are_rejected(client, person, token):
    events = [
        event("big", "screen_time", {"date": "2025-03-01", "app": "x", "seconds": 2**70}),
        event(
            "key",
            "sleep_session",
            {
                "start": "2025-03-01T00:00:00Z",
                "end": "2025-03-01T06:00:00Z",
                "minutes_asleep": 300,
                "stages": {"$set": 1},
            },
        ),
        event("far", "note", {"text": "x"}, occurred_at="9999-12-31T23:59:59-23:00"),
    ]
    response = post(client, {"events": events}, token)
    assert response.status_code == 202
    assert [r["id"] for r in response.json()["rejected"]] == ["big", "key", "far"]


def test_body_over_1_mb_is_413(client, token):
    huge = {"events": [event("n", "note", {"text": "x" * 1_100_000})]}
    response = post(client, huge, token)
    assert response.status_code == 413
    assert response.json() == {"error": "The body is over 1 MB."}


def test_wrong_method_is_405(client, token):
    response = client.get(URL, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 405
    assert "error" in response.json()


# --- The OpenAPI schema -------------------------------------------------------------------------


def test_schema_describes_the_events_and_records_apis_only(client, db):
    response = client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    schema = response.json()
    assert schema["info"]["title"] == "Sibling API"
    assert sorted(schema["paths"]) == [
        URL,
        "/api/v1/connections/",
        "/api/v1/records/",
        "/api/v1/records/{record_id}/",
    ]
    operation = schema["paths"][URL]["post"]
    assert set(operation) >= {"requestBody", "responses", "security"}
    assert {"202", "400", "401", "403", "413"} <= set(operation["responses"])
    assert operation["security"] == [{"bearerAuth": []}]
    assert schema["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schema["components"]["securitySchemes"]["bearerAuth"]["description"],
    }
    event_schema = schema["components"]["schemas"]["Event"]
    assert set(event_schema["required"]) == {"id", "kind", "occurred_at", "data"}


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_events_api_conforms_to_its_schema(db, mode):
    """Generated requests from the published schema: never a 5xx, answers as documented."""
    secret = api_token_create(user=UserFactory(), name="Schemathesis").secret
    seen = schema_statuses(secret=secret, mode=mode, max_examples=30, path=URL)
    # Negative cases include requests without valid credentials: 401 is documented.
    assert seen <= {202, 400, 401, 413, 415}, seen
    assert (202 if mode == GenerationMode.POSITIVE else 400) in seen


def test_token_digest_is_sha256_hex():
    assert token_digest("sib_abc") == hashlib.sha256(b"sib_abc").hexdigest()


# --- Invalid Unicode, and where a batch is kept ---------------------------------------------------


@pytest.mark.parametrize(
    "raw, where",
    [
        (b'{"events": [{"id": "\\ud800", "kind": "note", "occurred_at": "2025-03-01T08:30:00Z",'
         b' "data": {"text": "x"}}]}', "body.events[0].id"),
        (b'{"events": [{"id": "a", "kind": "no\\ud800te", "occurred_at": "2025-03-01T08:30:00Z",'
         b' "data": {"text": "x"}}]}', "body.events[0].kind"),
        (b'{"events": [{"id": "a", "kind": "note", "occurred_at": "2025-03-01T08:30:00Z",'
         b' "data": {"text": "hi \\udfff"}}]}', "body.events[0].data.text"),
        (b'{"events": [{"id": "a", "kind": "note", "occurred_at": "2025-03-01T08:30:00Z",'
         b' "data": {"text": "x", "\\ud800": 1}}]}', "body.events[0].data (an object key)"),
    ],
    ids=["id", "kind", "data-value", "data-key"],
)  # fmt: skip
def test_a_lone_surrogate_anywhere_is_400_naming_where(client, person, token, raw, where):
    assert b"\\ud" in raw  # the JSON escape itself, as a client would send it
    response = post(client, raw, token)
    assert response.status_code == 400, response.content
    assert response.json()["error"].startswith(f"{where}: invalid Unicode")
    assert not WebhookEvent.objects.filter(provider="events").exists()


def test_a_batch_is_kept_under_the_persons_key_until_processed(person, raw_db):
    from ingestion.events import SOURCE
    from ingestion.webhooks import IncomingEvent, webhook_event_process, webhook_event_store
    from sibling.encryption import ciphertext_key_id, data_key_id

    incoming = IncomingEvent(
        dedup_key=batch_dedup_key(person.pk, ["m1"]),
        event_type="batch",
        payload=VALID[:1],
        user_id=person.pk,
    )
    data_key_id(person.pk, create=True)  # as the person's own write through the API does
    stored, _ = webhook_event_store(provider=SOURCE, event=incoming, enqueue=False)
    table = raw_db[WebhookEvent._meta.db_table]
    ciphertext = table.find_one({"_id": stored.pk})["payload"]
    assert ciphertext_key_id(ciphertext) == data_key_id(person.pk, create=False)
    assert ciphertext_key_id(ciphertext) != data_key_id("system:webhooks")

    assert webhook_event_process(stored.pk).status == WebhookEvent.Status.PROCESSED
    assert table.find_one({"_id": stored.pk})["payload"] is None
    assert raw_db["volunteered_data"].count_documents({"user": person.pk}) == 1

    # A redelivery is still recognised; after the event has expired, the batch is processed
    # again and writes nothing new (records are keyed by the client's ids).
    assert webhook_event_store(provider=SOURCE, event=incoming)[1] is False
    table.delete_one({"_id": stored.pk})
    again, created = webhook_event_store(provider=SOURCE, event=incoming)
    assert created and WebhookEvent.objects.get(pk=again.pk).status == "processed"
    assert raw_db["volunteered_data"].count_documents({"user": person.pk}) == 1


def test_a_provider_event_whose_person_is_unknown_keeps_the_system_key(db, raw_db):
    from ingestion.webhooks import IncomingEvent, webhook_event_store
    from sibling.encryption import ciphertext_key_id, data_key_id

    incoming = IncomingEvent(dedup_key="sys", event_type="ITEM.ERROR", payload={"item_id": "x"})
    stored, _ = webhook_event_store(
        provider=provider_with(webhooks=True).id, event=incoming, enqueue=False
    )
    ciphertext = raw_db[WebhookEvent._meta.db_table].find_one({"_id": stored.pk})["payload"]
    assert ciphertext_key_id(ciphertext) == data_key_id("system:webhooks")


def test_events_of_a_person_being_erased_are_refused_for_good(client, person, token, raw_db):
    from django.utils import timezone

    from ingestion.fence import erasure_subject
    from ingestion.models import ErasureRecord

    ErasureRecord.objects.create(
        subject=erasure_subject(person.pk), erased_at=timezone.now(), completed=False
    )
    answer = post(client, {"events": VALID[:1]}, token)
    # Not 503 "retry": retrying changes nothing while the account is being erased.
    assert answer.status_code == 410 and "being erased" in answer.json()["error"]
    assert not WebhookEvent.objects.filter(provider="events").exists()
