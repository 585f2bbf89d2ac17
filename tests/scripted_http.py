"""A real HTTP server on a free local port that answers from a script, for tests of how a
client reads a provider's answers (statuses, bodies, stalls) where the sandbox has no such
fault. Every request it receives is recorded."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Answer:
    status: int = 200
    body: Any = field(default_factory=dict)  # JSON-encoded unless bytes
    headers: dict[str, str] = field(default_factory=dict)
    stall_s: float = 0.0  # wait this long before answering (a slow provider)


class _Handler(BaseHTTPRequestHandler):
    server: ScriptedServer

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.server.seen.append(
            {
                "method": self.command,
                "path": self.path,
                "headers": dict(self.headers),
                "body": self.rfile.read(length).decode(errors="replace"),
            }
        )
        script = self.server.script
        answer = script.pop(0) if len(script) > 1 else script[0]
        if answer.stall_s:
            time.sleep(answer.stall_s)
        data = answer.body if isinstance(answer.body, bytes) else json.dumps(answer.body).encode()
        try:
            self.send_response(answer.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client gave up waiting (a timeout under test)
            pass

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


class ScriptedServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script: list[Answer] = [Answer()]
        self.seen: list[dict[str, Any]] = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"

    def answers(self, *answers: Answer) -> None:
        """Answer the next requests in this order; the last one answers every later request."""
        self.script = list(answers)


def scripted_server() -> Iterator[ScriptedServer]:
    """For a pytest fixture: ``server = pytest.fixture(scripted_server)``."""
    server = ScriptedServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
