"""Tracing: OpenTelemetry spans, switched on only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set.

``span(name, **attributes)`` is what the code calls around a unit of work (a sync, a page, a
provider call, a webhook delivery). Without an endpoint it returns one shared context manager
that does nothing (no span, no context change; OpenTelemetry is not even imported).

With an endpoint (``tracing_setup()``, called from the app's ``ready()``), this process gets a
TracerProvider whose spans go through a batch processor to the OTLP/HTTP exporter, and the
Django, pymongo and requests instrumentations. What leaves the process:

- A trace begins at Sibling's edge: an incoming request's ``traceparent`` is not believed (a
  sender could choose trace ids and sampling) and none is sent to providers. A database command
  or HTTP call outside any trace (a broker poll, a heartbeat) starts no trace of its own.
- Attributes are scrubbed before export (:func:`span_scrubbed`): every query-string value, email
  addresses (``@`` or ``%40``), token-shaped values, the client's address on server spans and
  sensitive captured headers are redacted; exceptions are named by class only (their messages
  and stack traces may quote values: they stay in the scrubbed logs).

Fork safety: the provider and the instrumentations are code and configuration, shared by a
forked child; the processor (a thread, the exporter's HTTP connections) is made lazily in the
process that ends its first span and never used across a fork, so gunicorn workers and
django-q2's forked workers each export through their own, whether they were set up before the
fork or after. A multiprocessing child (django-q2's worker) leaves by ``os._exit``, without
``atexit``: its processor is flushed by a multiprocessing finalizer instead.
"""

from __future__ import annotations

import contextlib
import multiprocessing.util
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

ENDPOINT_VARIABLE = "OTEL_EXPORTER_OTLP_ENDPOINT"
# Health checks and the metrics scrape would be most of the web process's traces.
DEFAULT_EXCLUDED_URLS = "/healthz,/metrics"
REDACTED = "[redacted]"
EXIT_FLUSH_S = 5

_tracer: Any = None  # opentelemetry Tracer while tracing is on in this process, else None
_provider: Any = None  # one per process image: the pymongo instrumentation keeps its first
_processor: _ProcessLocalProcessor | None = None
_previous_propagator: Any = None


class _Off:
    """The context manager ``span()`` returns when tracing is off: one shared instance."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return False


_OFF = _Off()


def enabled() -> bool:
    return _tracer is not None


def span(name: str, **attributes: Any) -> Any:
    """A span named ``name`` around the block (the current span's child); yields the span, or
    None when tracing is off. An exception leaving the block marks the span as an error named
    by its class (``error.type``). Attribute values that are not str, bool, int or float are
    written as text; None values are left out."""
    tracer = _tracer
    if tracer is None:
        return _OFF
    return _span(tracer, name, attributes, None)


def trace_carrier() -> dict[str, str] | None:
    """The current trace context as W3C headers (``traceparent``), to store with work that is
    picked up later (a webhook event); None when tracing is off or no span is current."""
    if _tracer is None:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier or None


def span_continued(carrier: Any, name: str, **attributes: Any) -> Any:
    """Like ``span()``, in the trace ``carrier`` (from :func:`trace_carrier`) names, as a child
    of the span that stored it. A missing or malformed carrier starts a trace of its own."""
    tracer = _tracer
    if tracer is None:
        return _OFF
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    if isinstance(carrier, Mapping):
        headers = {
            key: value
            for key, value in carrier.items()
            if key in ("traceparent", "tracestate") and isinstance(value, str) and len(value) < 512
        }
        # An empty context (not None) so a carrier that names no trace starts a new one
        # rather than joining whatever span is current.
        context = TraceContextTextMapPropagator().extract(headers)
    else:
        from opentelemetry.context import Context

        context = Context()
    return _span(tracer, name, attributes, context)


@contextlib.contextmanager
def _span(tracer: Any, name: str, attributes: Mapping[str, Any], context: Any) -> Iterator[Any]:
    from opentelemetry.trace import Status, StatusCode

    with tracer.start_as_current_span(
        name,
        context=context,
        attributes=_attribute_values(attributes),
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        try:
            yield current
        except Exception as err:
            current.set_attribute("error.type", type(err).__qualname__)
            current.set_status(Status(StatusCode.ERROR))
            raise


def _attribute_values(attributes: Mapping[str, Any]) -> dict[str, Any]:
    values = {}
    for key, value in attributes.items():
        if value is None:
            continue
        values[key] = value if isinstance(value, str | bool | int | float) else str(value)
    return values


# --- Setup -------------------------------------------------------------------------------------


def tracing_setup(*, processor_factory: Callable[[], Any] | None = None) -> bool:
    """Switch tracing on in this process when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (and
    ``OTEL_SDK_DISABLED`` is not true); True when it is on. Idempotent.

    ``processor_factory`` makes the span processor each process exports through (default: a
    ``BatchSpanProcessor`` over the OTLP/HTTP exporter, both configured by the standard
    ``OTEL_*`` variables); tests pass one over the SDK's in-memory exporter."""
    global _tracer, _provider, _processor, _previous_propagator
    if not os.environ.get(ENDPOINT_VARIABLE):
        return False
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if _tracer is not None and processor_factory is None:
        return True

    from opentelemetry import propagate, trace
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider

    if _provider is None:
        _processor = _ProcessLocalProcessor(processor_factory or _otlp_processor)
        resource = {}
        if "service.name=" not in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", ""):
            resource[SERVICE_NAME] = os.environ.get("OTEL_SERVICE_NAME") or "sibling"
        _provider = TracerProvider(
            resource=Resource.create(resource), sampler=_EdgeSampler(_env_sampler())
        )
        _provider.add_span_processor(_processor)
        trace.set_tracer_provider(_provider)
    else:
        assert _processor is not None
        _processor.factory_replace(processor_factory or _otlp_processor)

    # Neither believe an incoming traceparent nor send one to a provider; webhook events carry
    # their context with an explicit propagator (trace_carrier / span_continued).
    if not isinstance(propagate.get_global_textmap(), _NoPropagation):
        _previous_propagator = propagate.get_global_textmap()
        propagate.set_global_textmap(_NoPropagation())
    _instrument(_provider)
    _tracer = _provider.get_tracer("sibling")
    return True


def tracing_teardown() -> None:
    """Switch tracing off in this process (tests): instrumentations removed, nothing exported."""
    global _tracer
    if _tracer is None:
        return
    from opentelemetry import propagate

    _tracer = None
    _uninstrument()
    if _processor is not None:
        _processor.factory_replace(None)
    if _previous_propagator is not None:
        propagate.set_global_textmap(_previous_propagator)


def _otlp_processor() -> Any:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    return BatchSpanProcessor(OTLPSpanExporter())


def _env_sampler() -> Any:
    from opentelemetry.sdk.trace.sampling import _get_from_env_or_default

    return _get_from_env_or_default()


def _instrumentors() -> list[Any]:
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.instrumentation.pymongo import PymongoInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    return [DjangoInstrumentor(), PymongoInstrumentor(), RequestsInstrumentor()]


def _instrument(provider: Any) -> None:
    from opentelemetry.instrumentation.django import DjangoInstrumentor

    for instrumentor in _instrumentors():
        if instrumentor.is_instrumented_by_opentelemetry:
            continue
        options: dict[str, Any] = {"tracer_provider": provider}
        if isinstance(instrumentor, DjangoInstrumentor) and not os.environ.get(
            "OTEL_PYTHON_DJANGO_EXCLUDED_URLS"
        ):
            options["excluded_urls"] = DEFAULT_EXCLUDED_URLS
        # pymongo's listener applies to clients made after this: setup runs in ready(), before
        # the first client of the process (sibling.mongo and Django's are made on first use).
        instrumentor.instrument(**options)


def _uninstrument() -> None:
    for instrumentor in _instrumentors():
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()


class _NoPropagation:
    """The global propagator while tracing is on: extracts nothing (an incoming request starts
    a trace of its own) and injects nothing (no trace context is sent to providers)."""

    fields: frozenset[str] = frozenset()

    def extract(self, carrier: Any, context: Any = None, getter: Any = None) -> Any:
        from opentelemetry.context import Context

        return context if context is not None else Context()

    def inject(self, carrier: Any, context: Any = None, setter: Any = None) -> None:
        return None


class _EdgeSampler:
    """Delegates to the configured sampler (``OTEL_TRACES_SAMPLER``, parent-based always-on by
    default), except that a client span with no parent (a database command or HTTP call made
    outside any request, sync or delivery: the queue's polling, a heartbeat) is not sampled."""

    def __init__(self, delegate: Any) -> None:
        self._delegate = delegate

    def should_sample(
        self,
        parent_context: Any,
        trace_id: int,
        name: str,
        kind: Any = None,
        attributes: Any = None,
        links: Any = None,
        trace_state: Any = None,
    ) -> Any:
        from opentelemetry import trace
        from opentelemetry.sdk.trace.sampling import Decision, SamplingResult

        if kind == trace.SpanKind.CLIENT:
            parent = trace.get_current_span(parent_context).get_span_context()
            if not parent.is_valid:
                return SamplingResult(Decision.DROP)
        return self._delegate.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"EdgeSampler{{{self._delegate.get_description()}}}"


# --- One processor per process ------------------------------------------------------------------


class _ProcessLocalProcessor:
    """A span processor that hands each span, scrubbed, to this process's own processor, made
    by ``factory`` on first use in the process (see the module docstring on forks)."""

    def __init__(self, factory: Callable[[], Any] | None) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._pid = -1
        self._processor: Any = None
        # A processor inherited across a fork is kept referenced, never used or shut down: its
        # thread and connections belong to the parent.
        self._inherited: list[Any] = []

    def factory_replace(self, factory: Callable[[], Any] | None) -> None:
        with self._lock:
            if self._processor is not None and self._pid == os.getpid():
                _processor_shutdown(self._processor)
            self._factory, self._processor, self._pid = factory, None, -1

    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()  # another thread may have held it at the fork
        if self._processor is not None:
            self._inherited.append(self._processor)
        self._processor, self._pid = None, -1

    def _current(self) -> Any:
        if self._pid == os.getpid():
            return self._processor
        with self._lock:
            if self._pid != os.getpid():
                self._processor = self._factory() if self._factory is not None else None
                self._pid = os.getpid()
                if self._processor is not None:
                    # A forked multiprocessing child ends with os._exit(): atexit does not run
                    # there, its finalizers do (and in the main process, at exit, as well).
                    multiprocessing.util.Finalize(
                        None, _shutdown_here, args=(self._processor, os.getpid()), exitpriority=10
                    )
            return self._processor

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        processor = self._current()
        if processor is not None:
            processor.on_start(span, parent_context=parent_context)

    def _on_ending(self, span: Any) -> None:
        pass

    def on_end(self, span: Any) -> None:
        processor = self._current()
        if processor is not None:
            processor.on_end(span_scrubbed(span))

    def shutdown(self) -> None:
        if self._processor is not None and self._pid == os.getpid():
            _processor_shutdown(self._processor)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        if self._processor is not None and self._pid == os.getpid():
            return bool(self._processor.force_flush(timeout_millis))
        return True


def _shutdown_here(processor: Any, pid: int) -> None:
    # A plain fork (gunicorn's) copies the finalizers too: only the owner shuts it down.
    if os.getpid() == pid:
        _processor_shutdown(processor)


def _processor_shutdown(processor: Any) -> None:
    """Flush and stop, waiting at most EXIT_FLUSH_S: with the collector unreachable, the batch
    processor's own shutdown would wait 30 s (the exporter retrying each batch for
    OTEL_EXPORTER_OTLP_TIMEOUT), longer than a worker is given to stop. What is not sent by
    then is dropped."""
    batches = getattr(processor, "_batch_processor", None)
    if batches is not None and hasattr(batches, "shutdown"):
        batches.shutdown(timeout_millis=EXIT_FLUSH_S * 1000)
    else:
        processor.shutdown()


def _after_fork_in_child() -> None:
    if _processor is not None:
        _processor.after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


# --- What leaves the process ---------------------------------------------------------------------

_QUERY_VALUE = re.compile(r"([?&;][^=&#?\s]*=)[^&#;\s]*")
_EMAIL = re.compile(r"[\w.+-]+(?:@|%40)[\w-]+(?:\.[\w-]+)+", re.IGNORECASE)
# The client's address on a server span: personal data.
_CLIENT_ADDRESS_KEYS = frozenset(
    {
        "client.address",
        "client.port",
        "http.client_ip",
        "net.peer.ip",
        "net.peer.port",
        "net.sock.peer.addr",
        "net.sock.peer.port",
        "network.peer.address",
        "network.peer.port",
    }
)
_SENSITIVE_HEADER = re.compile(
    r"auth|cookie|token|key|secret|sign|verif|session|csrf|password|credential", re.IGNORECASE
)
_EXCEPTION_KEYS = frozenset({"exception.type", "exception.escaped"})


def value_scrubbed(value: str) -> str:
    """A string attribute as exported: query-string values, email addresses and anything
    token-shaped (``sibling.logs.scrub``) redacted."""
    from sibling.logs import scrub

    value = _QUERY_VALUE.sub(lambda m: m.group(1) + REDACTED, value)
    value = _EMAIL.sub(REDACTED, value)
    return scrub(value)


def _scrubbed(value: Any) -> Any:
    if isinstance(value, str):
        return value_scrubbed(value)
    if isinstance(value, tuple | list):
        return tuple(_scrubbed(item) for item in value)
    return value


def attributes_scrubbed(attributes: Mapping[str, Any] | None, *, server: bool = False) -> Any:
    if not attributes:
        return attributes
    clean = {}
    for key, value in attributes.items():
        if server and key in _CLIENT_ADDRESS_KEYS:
            continue
        if key.startswith(("http.request.header.", "http.response.header.")) and (
            _SENSITIVE_HEADER.search(key)
        ):
            clean[key] = (REDACTED,)
            continue
        clean[key] = _scrubbed(value)
    return clean


def span_scrubbed(span: Any) -> Any:
    """A copy of a finished span fit to leave the process (see the module docstring)."""
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.trace import Link, SpanKind, Status

    server = span.kind == SpanKind.SERVER
    events = []
    for event in span.events:
        attributes = event.attributes or {}
        if event.name == "exception":
            attributes = {k: v for k, v in attributes.items() if k in _EXCEPTION_KEYS}
        events.append(Event(event.name, attributes_scrubbed(attributes), timestamp=event.timestamp))
    links = [Link(link.context, attributes_scrubbed(link.attributes)) for link in span.links]
    status = span.status
    if status.description:
        # The SDK writes "<class>: <message>", pymongo the server's errmsg (which may quote a
        # duplicate key's value): only a leading class name is kept.
        name = re.match(r"[A-Za-z_][\w.]*(?=:)", status.description)
        status = Status(status.status_code, name.group(0) if name else None)
    return ReadableSpan(
        name=value_scrubbed(span.name),
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=attributes_scrubbed(span.attributes, server=server),
        events=events,
        links=links,
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )
