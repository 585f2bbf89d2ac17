"""Tracing (sibling.tracing): off without OTEL_EXPORTER_OTLP_ENDPOINT; on, a sync and a webhook
delivery are each one trace, every process exports through its own processor (forks too), and
no token, credential or email address leaves in a span.

In-process tests export to the SDK's in-memory exporter; the setup and fork tests start Python
the way the web and worker processes start, against a small OTLP/HTTP collector run here."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from django.conf import settings
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from ingestion.authentication import api_token_create
from ingestion.http import CallCounter, ProviderHttp, RetryPolicy
from ingestion.models import SyncRun, WebhookEvent
from ingestion.webhooks import TRACE_KEY, webhook_events_drain
from sibling import tracing
from sibling.mongo import plain_database
from sources.models import UserDataSource
from tests.helpers import MANAGE, kill_group, project_env, start_process
from tests.sources.providers.kit import sandbox_connection

pytestmark = pytest.mark.django_db(transaction=True)
NO_WAIT = RetryPolicy(sleep=lambda seconds: None)
OTEL_MIDDLEWARE = (
    "opentelemetry.instrumentation.django.middleware.otel_middleware._DjangoMiddleware"
)


@pytest.fixture
def traced(monkeypatch) -> Iterator[InMemorySpanExporter]:
    """Tracing on in this process, exporting (scrubbed, as to a collector) to memory."""
    # The variable switches tracing on; the test's processor replaces the OTLP exporter.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    exporter = InMemorySpanExporter()
    assert tracing.tracing_setup(processor_factory=lambda: SimpleSpanProcessor(exporter))
    yield exporter
    tracing.tracing_teardown()


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def exported_text(spans: tuple[ReadableSpan, ...]) -> str:
    """Everything a collector would receive about the spans, as text."""
    parts = []
    for span in spans:
        parts.append(span.name)
        parts.append(repr(dict(span.attributes or {})))
        parts.append(repr(span.status.description))
        for event in span.events:
            parts.append(event.name + repr(dict(event.attributes or {})))
        for link in span.links:
            parts.append(repr(dict(link.attributes or {})))
    return "\n".join(parts)


def secrets_of(connection: UserDataSource) -> list[str]:
    values = [value for value in connection.credentials.values() if isinstance(value, str)]
    return [value for value in values if len(value) >= 8] + [connection.user.email]


# --- Off ---------------------------------------------------------------------------------------


def test_off_without_the_variable_nothing_is_set_up_and_span_is_one_shared_no_op(monkeypatch):
    tracing.tracing_teardown()  # in case this session was started with the variable set
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    assert tracing.tracing_setup() is False
    assert not tracing.enabled()
    assert tracing.span("sync", provider="x") is tracing.span("other")  # no object per call
    with tracing.span("sync", provider="x") as current:
        assert current is None
    assert tracing.trace_carrier() is None
    assert OTEL_MIDDLEWARE not in settings.MIDDLEWARE


def test_otel_sdk_disabled_keeps_it_off_even_with_an_endpoint(monkeypatch):
    tracing.tracing_teardown()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert tracing.tracing_setup() is False
    assert not tracing.enabled() and OTEL_MIDDLEWARE not in settings.MIDDLEWARE


def _python(code: str, env: dict[str, str]) -> dict[str, Any]:
    """Run code in a fresh Python with Django set up as the web and worker processes do; the
    code prints one JSON line last."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


PROCESS_ENV = {"DJANGO_SETTINGS_MODULE": "sibling.settings", "DEBUG": "1"}


def test_a_process_started_without_the_variable_loads_no_tracing_at_all():
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")} | PROCESS_ENV
    found = _python(
        """
        import json, sys
        import django
        django.setup()
        from django.conf import settings
        from django.core.wsgi import get_wsgi_application
        get_wsgi_application()
        import ingestion.http, ingestion.webhooks, ingestion.runner
        from sibling import tracing
        with tracing.span("sync"):
            pass
        print(json.dumps({
            "enabled": tracing.enabled(),
            "loaded": sorted(m for m in sys.modules if m.startswith("opentelemetry")),
            "middleware": [m for m in settings.MIDDLEWARE if "opentelemetry" in m],
        }))
        """,
        env,
    )
    assert found == {"enabled": False, "loaded": [], "middleware": []}


class _Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP collector: keeps each export request's span names and attributes."""

    received: list[dict[str, Any]]

    def do_POST(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        request = ExportTraceServiceRequest()
        request.ParseFromString(self.rfile.read(int(self.headers["Content-Length"])))
        spans = []
        for resource_spans in request.resource_spans:
            service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans.append(
                        {
                            "name": span.name,
                            "service": service,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_span_id": span.parent_span_id.hex(),
                            "text": str(span),  # everything the collector got, as text
                            **{a.key: _any_value(a.value) for a in span.attributes},
                        }
                    )
        self.received.append({"path": self.path, "spans": spans})
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def _any_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@pytest.fixture
def collector() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []
    handler = type("Collector", (_Collector,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", received
    server.shutdown()
    server.server_close()


def test_on_every_process_exports_its_own_spans_across_forks(collector):
    """The web process (gunicorn forks its workers) and the worker cluster (django-q2 forks
    through multiprocessing) set tracing up before forking; each child exports through its own
    processor and connection, and flushes what it holds when it ends."""
    endpoint, received = collector
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")} | PROCESS_ENV
    # Nothing is exported on a timer in this test: only at each process's end (or flush).
    env |= {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_BSP_SCHEDULE_DELAY": "600000"}
    found = _python(
        """
        import json, multiprocessing, os, sys
        import django
        django.setup()
        from django.conf import settings
        from opentelemetry import trace
        from sibling import tracing

        def work(name):
            with tracing.span(name, pid=str(os.getpid())):
                pass

        # The parent exports first, so its exporter holds an open connection when it forks.
        work("parent.before")
        trace.get_tracer_provider().force_flush()
        child = multiprocessing.get_context("fork").Process(target=work, args=("queue.worker",))
        child.start()
        child.join()
        pid = os.fork()
        if pid == 0:  # as a gunicorn worker: a plain fork that exits through sys.exit
            work("web.worker")
            sys.exit(0)
        os.waitpid(pid, 0)
        work("parent.after")
        print(json.dumps({
            "enabled": tracing.enabled(),
            "middleware": [m for m in settings.MIDDLEWARE if "opentelemetry" in m],
            "pid": os.getpid(),
        }))
        """,
        env,
    )
    assert found["enabled"] and found["middleware"] == [OTEL_MIDDLEWARE]
    assert {request["path"] for request in received} == {"/v1/traces"}
    spans = {span["name"]: span for request in received for span in request["spans"]}
    assert set(spans) == {"parent.before", "queue.worker", "web.worker", "parent.after"}
    assert spans["parent.before"]["pid"] == spans["parent.after"]["pid"] == str(found["pid"])
    pids = {spans[name]["pid"] for name in ("queue.worker", "web.worker")}
    assert len(pids) == 2 and str(found["pid"]) not in pids
    assert spans["queue.worker"]["service"]["service.name"] == "sibling"
    # One export request per process end: nothing was lost or sent twice.
    assert sorted(len(request["spans"]) for request in received) == [1, 1, 1, 1]


@pytest.fixture
def broker_db(monkeypatch):
    from django_q.conf import Conf

    # django-q2 read the database name before the test database existed.
    monkeypatch.setattr(Conf, "MONGO_DB", settings.DATABASES["default"]["NAME"])


def _wait(predicate: Any, what: str, timeout_s: float = 60) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{what} within {timeout_s}s")


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=30)
    return output


def test_a_delivery_to_gunicorn_processed_by_a_qcluster_is_one_exported_trace(
    collector, broker_db, person
):
    """Real processes, as deployed: a gunicorn worker (forked from a master that loaded the
    app) receives the delivery; a django-q2 worker (forked from the cluster) processes it. Each
    exports through its own processor; the collector gets one trace, receipt to processing."""
    endpoint, received = collector
    env = project_env(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_SERVICE_NAME="sibling-test")
    env = {k: v for k, v in env.items() if k != "OTEL_TRACES_SAMPLER"}
    token = api_token_create(user=person, name="Phone").secret
    web = start_process(
        [
            str(Path(sys.executable).with_name("gunicorn")),
            "sibling.wsgi",
            "--preload",
            "--workers=1",
            "--bind=127.0.0.1:0",
        ],
        env,
    )
    workers = start_process([*MANAGE, "qcluster"], env)
    web_output = workers_output = ""
    try:
        url = ""
        for line in web.stdout:  # its first lines say where it listens (a free port)
            if "Listening at: " in line:
                url = line.split("Listening at: ")[1].split()[0]
                break
        assert url, "gunicorn stopped before it listened"
        body = {
            "events": [
                {
                    "id": "n1",
                    "kind": "note",
                    "occurred_at": "2025-03-01T08:30:00Z",
                    "data": {"text": f"ask {person.email}"},
                }
            ]
        }
        answer = requests.post(
            f"{url}/api/events/",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert answer.status_code == 202, answer.text
        _wait(
            lambda: WebhookEvent.objects.filter(status=WebhookEvent.Status.PROCESSED).exists(),
            "the event was not processed",
        )
    finally:
        try:
            web_output, workers_output = _stop(web), _stop(workers)
        finally:
            kill_group(web)
            kill_group(workers)

    spans = [span for request in received for span in request["spans"]]
    (process,) = [s for s in spans if s["name"] == "webhook.process"]
    (store,) = [s for s in spans if s["name"] == "webhook.store"]
    (server,) = [s for s in spans if s["span_id"] == store["parent_span_id"]]
    assert process["parent_span_id"] == store["span_id"]
    assert server["trace_id"] == store["trace_id"] == process["trace_id"]
    assert server["parent_span_id"] == ""  # a root: the trace begins at Sibling's edge
    assert process["service"]["service.name"] == "sibling-test"
    in_trace = [s for s in spans if s["trace_id"] == process["trace_id"]]
    # The worker's database commands while processing are in the trace, as its children.
    assert any(s["parent_span_id"] == process["span_id"] for s in in_trace), workers_output
    text = "\n".join(s["text"] for s in spans)
    assert token not in text and person.email not in text
    assert "opened before fork" not in web_output + workers_output


# --- A sync ------------------------------------------------------------------------------------


def test_a_sync_is_one_trace_with_a_span_per_page_and_per_provider_call(traced, sandbox, person):
    connection = sandbox_connection(person, auth_mode="api_key")
    from ingestion.runner import connection_sync

    run = connection_sync(connection.pk, policy=NO_WAIT)
    assert run.outcome == SyncRun.Outcome.SUCCESS, run.error_message
    assert run.pages >= 2

    spans = traced.get_finished_spans()
    (sync,) = by_name(spans, "sync")
    assert sync.parent is None
    assert sync.attributes["provider"] == connection.provider
    assert sync.attributes["connection"] == str(connection.pk)
    assert sync.attributes["trigger"] == run.trigger
    assert {span.context.trace_id for span in spans} == {sync.context.trace_id}

    def children(parent: ReadableSpan, name: str) -> list[ReadableSpan]:
        return [
            span
            for span in by_name(spans, name)
            if span.parent and span.parent.span_id == parent.context.span_id
        ]

    # Stored pages: each processed, then stored.
    pages = children(sync, "sync.page")
    assert len(pages) == run.pages
    for page in pages:
        assert page.attributes["stream"]
        assert len(children(page, "sync.page.process")) == 1
        assert len(children(page, "sync.page.store")) == 1
    # Fetched pages: fetched ahead in a thread of their own, so beside the pages, not inside.
    fetches = children(sync, "sync.page.fetch")
    assert len(fetches) >= run.pages  # and one per stream that found its end
    calls = by_name(spans, "provider.call")
    assert len(calls) == run.api_calls
    assert sum(len(children(fetch, "provider.call")) for fetch in fetches) == len(calls)
    for call in calls:
        assert call.attributes["operation"] and call.attributes["http.status_code"] == 200
        http = [s for s in spans if s.parent and s.parent.span_id == call.context.span_id]
        assert [s.kind for s in http] == [SpanKind.CLIENT]  # the requests instrumentation's
    # The API key travels in the query string: it is in no exported span.
    text = exported_text(spans)
    for secret in secrets_of(connection):
        assert secret not in text
    assert "[redacted]" in text


class _Budget:
    """A budget that waited the given seconds for each charge."""

    def __init__(self, waited_s: float) -> None:
        self.waited_s = waited_s

    def charge(self, operation: str, count: int = 1) -> float:
        return self.waited_s

    def observe(self, response: Any) -> None:
        pass


def test_a_provider_calls_span_records_the_budgets_wait_and_its_operation(traced, sandbox):
    http = ProviderHttp(
        provider_name="Example",
        policy=NO_WAIT,
        counter=CallCounter(),
        check=lambda response: None,
        budget=_Budget(1.25),
    )
    with http:
        http.request("GET", f"{sandbox.url}/healthz", operation="health.get", count=3)
    (call,) = by_name(traced.get_finished_spans(), "provider.call")
    assert call.attributes["budget.wait_s"] == 1.25
    assert call.attributes["operation"] == "health.get" and call.attributes["count"] == 3
    assert call.attributes["provider"] == "Example"


def test_a_failed_call_is_an_error_span_named_by_its_class(traced, sandbox):
    http = ProviderHttp(provider_name="Example", policy=NO_WAIT, counter=CallCounter())
    from ingestion.errors import PermanentError

    with http, pytest.raises(PermanentError):
        http.request("GET", f"{sandbox.url}/no-such-page/?token=abcdefgh12345678")
    (call,) = by_name(traced.get_finished_spans(), "provider.call")
    assert call.attributes["error.type"] == "PermanentError"
    assert call.status.status_code.name == "ERROR" and not call.status.description
    assert "abcdefgh12345678" not in exported_text(traced.get_finished_spans())


# --- A webhook delivery ------------------------------------------------------------------------


def test_a_delivery_is_one_trace_from_receipt_to_processing(traced, client, person, monkeypatch):
    # The drain runs later in a worker, outside the request: not inline as tests otherwise do.
    monkeypatch.setattr("ingestion.webhooks.webhook_event_enqueue", lambda event: None)
    token = api_token_create(user=person, name="Phone").secret
    note = f"call {person.email} back"
    body = {
        "events": [
            {
                "id": "n1",
                "kind": "note",
                "occurred_at": "2025-03-01T08:30:00Z",
                "data": {"text": note},
            }
        ]
    }
    response = client.post(
        "/api/events/?access_token=" + token,
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
        # A sender's own trace context is not believed: Sibling's trace starts at its edge.
        HTTP_TRACEPARENT="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
    assert response.status_code == 202, response.content
    event = WebhookEvent.objects.get()
    assert plain_database()[WebhookEvent._meta.db_table].find_one({"_id": event.pk})[TRACE_KEY]

    assert webhook_events_drain() == 1  # as the worker's drain task: no span is current
    event.refresh_from_db()
    assert event.status == WebhookEvent.Status.PROCESSED

    spans = traced.get_finished_spans()
    (server,) = [s for s in spans if s.kind == SpanKind.SERVER]
    (store,) = by_name(spans, "webhook.store")
    (process,) = by_name(spans, "webhook.process")
    assert server.parent is None
    assert server.context.trace_id != int("0af7651916cd43dd8448eb211c80319c", 16)
    assert store.parent.span_id == server.context.span_id
    assert process.parent.span_id == store.context.span_id
    assert {s.context.trace_id for s in spans} == {server.context.trace_id}
    assert process.attributes["event_type"] == event.event_type
    text = exported_text(spans)
    for secret in (token, person.email, note):
        assert secret not in text
    # The sender's address is personal data.
    assert "127.0.0.1" not in exported_text((server,))


def test_an_event_stored_without_tracing_is_processed_in_a_trace_of_its_own(traced, person):
    from ingestion.webhooks import IncomingEvent, webhook_event_process, webhook_event_store

    tracing.tracing_teardown()
    event, _ = webhook_event_store(
        provider="events",
        event=IncomingEvent(dedup_key="k1", event_type="UNKNOWN", payload={}),
        enqueue=False,
    )
    assert TRACE_KEY not in plain_database()[WebhookEvent._meta.db_table].find_one(
        {"_id": event.pk}
    )
    tracing.tracing_setup(processor_factory=lambda: SimpleSpanProcessor(traced))
    with tracing.span("elsewhere"):
        webhook_event_process(event.pk)
    (process,) = by_name(traced.get_finished_spans(), "webhook.process")
    assert process.parent is None


def test_health_checks_and_metric_scrapes_are_not_traced(traced, client):
    client.get("/healthz")
    client.get("/metrics")
    client.get("/login/")
    assert [s.kind for s in traced.get_finished_spans() if s.kind == SpanKind.SERVER] == [
        SpanKind.SERVER
    ]


# --- What leaves the process --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "secret"),
    [
        ("https://api.example.com/v1/data?key=k3y-abcdef123456&perspective=interval", "k3y-abc"),
        ("/connect/complete/x/?code=4/0AbCdEf&state=s", "4/0AbCdEf"),
        (
            "https://www.googleapis.com/calendar/v3/calendars/ann.lee%40example.com/events",
            "ann.lee",
        ),
        ("ann.lee@example.com", "ann.lee"),
    ],
)
def test_secrets_in_attribute_values_are_redacted(value, secret):
    assert secret not in tracing.value_scrubbed(value)


def test_token_shaped_values_are_redacted():
    # Made at run time, so no token-shaped value sits in the tree.
    google = "ya29." + "a0" + secrets.token_urlsafe(24)
    sandbox_key = "access-sandbox-" + str(uuid.uuid4())
    assert google[5:] not in tracing.value_scrubbed(f"Authorization: Bearer {google}")
    assert sandbox_key[15:] not in tracing.value_scrubbed(sandbox_key)


def test_server_spans_lose_the_clients_address_and_sensitive_captured_headers():
    attributes = {
        "client.address": "203.0.113.9",
        "net.peer.ip": "203.0.113.9",
        "http.request.header.authorization": ("Bearer abc",),
        "http.request.header.x_webhook_signature": ("eyJhbGciOi",),
        "http.request.header.content_type": ("application/json",),
        "http.route": "webhooks/<str:provider>/",
    }
    clean = tracing.attributes_scrubbed(attributes, server=True)
    assert "client.address" not in clean and "net.peer.ip" not in clean
    assert clean["http.request.header.authorization"] == ("[redacted]",)
    assert clean["http.request.header.x_webhook_signature"] == ("[redacted]",)
    assert clean["http.request.header.content_type"] == ("application/json",)
    assert clean["http.route"] == "webhooks/<str:provider>/"


def test_exceptions_and_database_errors_are_named_by_class_only(traced):
    from pymongo import MongoClient
    from pymongo.errors import DuplicateKeyError

    from sibling.mongo import database_name, database_uri

    email, name = "ann.lee@example.com", "Ann Lee's diary"
    # A client made now carries the pymongo instrumentation's listener.
    client = MongoClient(database_uri())
    try:
        collection = client[database_name()]["tracing_test"]
        collection.create_index("title", unique=True)
        with tracing.span("store"):
            collection.insert_one({"title": name})
            with pytest.raises(DuplicateKeyError):
                # A failed command: the server's message quotes the duplicate value.
                collection.find_one_and_update({"other": 1}, {"$set": {"title": name}}, upsert=True)
        collection.drop()
        provider = tracing._provider
        with pytest.raises(ValueError):
            with provider.get_tracer("test").start_as_current_span("parse"):
                raise ValueError(f"not a date: {email}")
    finally:
        client.close()

    spans = traced.get_finished_spans()
    database = [s for s in spans if s.kind == SpanKind.CLIENT]
    assert len(database) == 2 and all(s.parent for s in database)
    (failed,) = [s for s in database if s.status.status_code.name == "ERROR"]
    assert not failed.status.description
    (parse,) = by_name(spans, "parse")
    assert parse.status.description == "ValueError"
    (exception,) = parse.events
    assert exception.attributes["exception.type"] == "ValueError"
    assert set(exception.attributes) <= {"exception.type", "exception.escaped"}
    text = exported_text(spans)
    assert email not in text and "ann.lee" not in text and name not in text


def test_database_commands_outside_any_trace_start_none(traced):
    """The queue's polling and the heartbeat would otherwise each be a trace."""
    from pymongo import MongoClient

    from sibling.mongo import database_name, database_uri

    client = MongoClient(database_uri())
    try:
        client[database_name()]["tracing_test"].find_one({})
        with tracing.span("unit"):
            client[database_name()]["tracing_test"].find_one({})
    finally:
        client.close()
    names = [s.name for s in traced.get_finished_spans()]
    assert names.count("unit") == 1
    assert len([s for s in traced.get_finished_spans() if s.kind == SpanKind.CLIENT]) == 1
