"""A sync fetches its next page while it stores the current one: never more than
SIBLING_SYNC_PREFETCH_PAGES ahead, each cursor stored after its page, a failed fetch met in its
place (after the pages before it are stored), and a sync that stops for any reason stops its
fetcher and closes its client.

The connection is a real one against the sandbox over HTTP; the tests watch its client's pages
as the fetcher asks for them."""

import threading
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from ingestion import runner
from ingestion.errors import TransientError
from ingestion.models import SyncRun
from ingestion.runner import sync_pages_stored_wait
from sibling import logs
from sources.models import UserDataSource
from tests.ingestion.conftest import fresh, stored, sync
from tests.sources.providers.kit import sandbox_connection

pytestmark = pytest.mark.django_db(transaction=True)
Outcome = SyncRun.Outcome
# Long enough for any machine; the waits below end as soon as what they wait for happens.
PATIENCE_S = 60


@pytest.fixture
def paged_connection(sandbox, person):
    """A connection whose backfill is many pages: a behavioral OAuth2 source, a page a day."""
    return sandbox_connection(person, auth_mode="oauth2", category="behavioral")


@dataclass
class Watch:
    """What the fetcher did, as the client saw it, beside what the sync stored."""

    stored: int = 0  # pages stored so far (counted after each page is stored)
    # As each fetch began: (pages yielded before it, pages stored by then).
    fetch_starts: list[tuple[int, int]] = field(default_factory=list)
    fetch_threads: set[str] = field(default_factory=set)
    contexts: list[dict] = field(default_factory=list)
    cursors: list[tuple[str, Any]] = field(default_factory=list)  # each page's, as yielded
    events: list[str] = field(default_factory=list)
    started: dict[int, threading.Event] = field(default_factory=dict)

    def stopped_in_order(self) -> bool:
        """Every stream's pages ended (or were closed) before the client was closed."""
        return self.events[-1:] == ["client closed"] and set(self.events[:-1]) == {"pages closed"}

    def fetch_began(self, index: int) -> threading.Event:
        return self.started.setdefault(index, threading.Event())

    def page_stored(self, run: SyncRun, stream: str, progress: float | None) -> None:
        self.stored += 1


def watch_pages(
    connection: UserDataSource, monkeypatch: pytest.MonkeyPatch, *, before_fetch=None
) -> Watch:
    """Watch the connection's client: each fetch as it begins, each page it yields, the end of
    its pages and the client's close. ``before_fetch(watch, index)`` runs as fetch ``index``
    begins (it may raise, as a failed fetch does)."""
    client_class = connection.provider_class.sync_client_class()
    pages, close = client_class.pages, client_class.close
    watch = Watch()

    def watched_pages(self, stream, cursor):
        inner = pages(self, stream, cursor)
        try:
            while True:
                index = len(watch.fetch_starts)
                watch.fetch_starts.append((len(watch.cursors), watch.stored))
                watch.fetch_threads.add(threading.current_thread().name)
                watch.contexts.append(dict(logs._context.get() or {}))
                watch.fetch_began(index).set()
                if before_fetch is not None:
                    before_fetch(watch, index)
                page = next(inner, None)
                if page is None:
                    return
                watch.cursors.append((stream.name, page.cursor))
                yield page
        finally:
            watch.events.append("pages closed")

    def watched_close(self):
        watch.events.append("client closed")
        close(self)

    monkeypatch.setattr(client_class, "pages", watched_pages)
    monkeypatch.setattr(client_class, "close", watched_close)
    return watch


def fetchers_alive() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("sync-fetch-")]


def test_the_next_page_is_fetched_while_the_current_one_is_stored(paged_connection, monkeypatch):
    watch = watch_pages(paged_connection, monkeypatch)
    overlapped = []

    def first_page_stored(run: SyncRun, stream: str, progress: float | None) -> None:
        if watch.stored == 0:
            # Page 0 is stored and the sync has not yet asked for page 1: its fetch is under
            # way already (sequential fetching would wait here forever).
            overlapped.append(watch.fetch_began(1).wait(PATIENCE_S))
        watch.page_stored(run, stream, progress)

    run = sync(paged_connection, on_page=first_page_stored)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    assert overlapped == [True]
    assert run.pages >= 3 and run.pages == watch.stored
    # Fetched in a thread of the sync's own, which carried the sync's log context along.
    assert watch.fetch_threads == {f"sync-fetch-{paged_connection.pk}"}
    assert {c.get("connection") for c in watch.contexts} == {str(paged_connection.pk)}
    assert {c.get("run") for c in watch.contexts} == {str(run.pk)}
    assert fetchers_alive() == []
    # Every cursor stored after its page: the last one yielded per stream is the stored one.
    last = dict(c for c in watch.cursors if c[1] is not None)
    assert fresh(paged_connection).cursors == last
    assert len(stored(paged_connection)) == run.created > 0


@pytest.mark.parametrize("ahead", [1, 2])
def test_the_fetcher_never_runs_more_than_the_bound_ahead(
    paged_connection, monkeypatch, settings, ahead
):
    settings.SIBLING_SYNC_PREFETCH_PAGES = ahead
    watch = watch_pages(paged_connection, monkeypatch)
    run = sync(paged_connection, on_page=watch.page_stored)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    assert len(watch.cursors) > ahead + 2
    # The fetch of page n begins only once page n - ahead - 1 is stored: one page being stored,
    # and at most `ahead` fetched (or being fetched) beside it.
    for yielded, stored_then in watch.fetch_starts:
        assert stored_then >= yielded - ahead, watch.fetch_starts


def test_without_prefetch_each_page_is_fetched_after_the_one_before_is_stored(
    paged_connection, monkeypatch, settings
):
    settings.SIBLING_SYNC_PREFETCH_PAGES = 0
    watch = watch_pages(paged_connection, monkeypatch)
    run = sync(paged_connection, on_page=watch.page_stored)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    assert all(yielded == stored_then for yielded, stored_then in watch.fetch_starts)
    assert watch.fetch_threads == {threading.current_thread().name}


def test_a_failed_fetch_after_stored_pages_keeps_them_and_their_cursor(
    paged_connection, monkeypatch, settings
):
    settings.SIBLING_SYNC_PREFETCH_PAGES = 2

    def provider_fails_on_the_fourth_page(watch: Watch, index: int) -> None:
        if len(watch.cursors) == 3:
            raise TransientError("the provider answered 503")

    watch = watch_pages(
        paged_connection, monkeypatch, before_fetch=provider_fails_on_the_fourth_page
    )
    run = sync(paged_connection, on_page=watch.page_stored)
    # The error came in its place: after the three pages fetched before it were stored.
    assert run.outcome == Outcome.FAILED and run.error_class == "TransientError"
    assert run.pages == 3 == watch.stored
    connection = fresh(paged_connection)
    assert connection.cursors == dict(c for c in watch.cursors[:3] if c[1] is not None)
    assert connection.consecutive_failures == 1
    assert len(stored(paged_connection)) == run.created > 0
    assert watch.stopped_in_order()
    assert fetchers_alive() == []
    # The next sync goes on from the stored cursor and stores nothing twice.
    monkeypatch.undo()
    UserDataSource.objects.filter(pk=paged_connection.pk).update(next_sync_at=timezone.now())
    again = sync(paged_connection)
    assert again.outcome == Outcome.SUCCESS, again.error_message
    assert len(stored(paged_connection)) == run.created + again.created


def test_a_lost_lease_stops_the_fetcher_and_closes_the_client(paged_connection, monkeypatch):
    monkeypatch.setattr(runner, "LEASE_RENEW_S", 0)  # renew before every page
    watch = watch_pages(paged_connection, monkeypatch)

    def taken_over(run: SyncRun, stream: str, progress: float | None) -> None:
        watch.page_stored(run, stream, progress)
        UserDataSource.objects.filter(pk=paged_connection.pk).update(
            lease_owner="the-next-holder", lease_expires_at=timezone.now() + timedelta(minutes=30)
        )

    run = sync(paged_connection, on_page=taken_over)
    assert run.outcome == Outcome.FAILED and run.error_class == "LeaseLost"
    assert run.pages == 1
    # It stopped within its bound: page 1 in hand, page 2 at most fetched ahead, no further.
    assert len(watch.cursors) <= 3
    assert watch.stopped_in_order()
    assert fetchers_alive() == []
    assert fresh(paged_connection).lease_owner == "the-next-holder"


class WorkerStopped(BaseException):
    """What a stopping worker raises through the sync (not an Exception: nothing catches it)."""


def test_a_stopped_worker_stops_the_fetcher_and_keeps_the_stored_page(
    paged_connection, monkeypatch
):
    provider = paged_connection.provider_class
    processor = provider.processor()
    calls = []

    def stopped_on_the_second_page(stream: str, payload: Any) -> Any:
        calls.append(stream)
        if len(calls) == 2:
            raise WorkerStopped
        return processor(stream, payload)

    monkeypatch.setattr(provider, "processor", classmethod(lambda cls: stopped_on_the_second_page))
    watch = watch_pages(paged_connection, monkeypatch)
    with pytest.raises(WorkerStopped):
        sync(paged_connection, on_page=watch.page_stored)
    assert watch.stored == 1
    assert watch.stopped_in_order()
    assert fetchers_alive() == []
    connection = fresh(paged_connection)
    assert connection.cursors == dict(c for c in watch.cursors[:1] if c[1] is not None)
    assert connection.lease_owner == ""  # given back on the way out


def test_the_fetch_thread_closes_its_database_connection(paged_connection, monkeypatch):
    closed_by = []
    close = runner._db_connections_close

    def recorded() -> None:
        closed_by.append(threading.current_thread().name)
        close()

    monkeypatch.setattr(runner, "_db_connections_close", recorded)
    run = sync(paged_connection)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    assert closed_by == [f"sync-fetch-{paged_connection.pk}"]


def test_a_client_can_wait_for_its_pages_to_be_stored(paged_connection, monkeypatch, settings):
    settings.SIBLING_SYNC_PREFETCH_PAGES = 2
    seen = []

    def reads_what_it_stored(watch: Watch, index: int) -> None:
        if len(watch.cursors) == 3 and not seen:
            # As a client about to read its own stored records does.
            sync_pages_stored_wait()
            seen.append(watch.stored)

    watch = watch_pages(paged_connection, monkeypatch, before_fetch=reads_what_it_stored)
    run = sync(paged_connection, on_page=watch.page_stored)
    assert run.outcome == Outcome.SUCCESS, run.error_message
    assert seen == [3]
    sync_pages_stored_wait()  # outside a fetcher: returns at once
