"""A local HTTP server that records the webhooks the sandbox sends it.

Import `recorder` (a fixture) into a test module to use it."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

FAST = (0.01, 0.01, 0.01)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


@dataclass
class Recorder:
    """Records each POST; answers the queued statuses in order, then `respond` (default 204)."""

    base: str = ""
    requests: list[Received] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    respond: Callable[[Received], int] | None = None

    @property
    def url(self) -> str:
        return f"{self.base}/hook/"

    def answer(self, received: Received) -> int:
        self.requests.append(received)
        if self.statuses:
            return self.statuses.pop(0)
        return self.respond(received) if self.respond else 204


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    state = Recorder()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            status = state.answer(Received(self.path, dict(self.headers.items()), body))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()
    server.server_close()


def header(received: Received, name: str) -> str:
    lowered = {k.lower(): v for k, v in received.headers.items()}
    return lowered[name.lower()]
