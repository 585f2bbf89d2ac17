"""The embedded development database: a SecantusDB server the project starts itself.

SecantusDB speaks the MongoDB wire protocol, so everything above this module talks to it exactly
as it would to a real mongod. It runs as its own process (never inside a process that forks, such
as a qcluster): as a background daemon for development (``make db``) and as a throwaway in-memory
server for the test suite. When ``MONGODB_URI`` is set, none of this is used.

Run as ``python -m sibling.embedded start|stop|status``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pymongo import MongoClient
from pymongo.errors import PyMongoError

BASE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 27117
DEFAULT_DATA_DIR = BASE_DIR / "var" / "mongo"
PID_FILE = BASE_DIR / "var" / "mongo.pid"
LOG_FILE = BASE_DIR / "var" / "log" / "mongo.log"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


class EmbeddedServerError(RuntimeError):
    """The embedded server could not be started or stopped."""


def server_uri(host: str, port: int) -> str:
    # directConnection: the server advertises a one-node replica set; talk to it as it is.
    return f"mongodb://{host}:{port}/?directConnection=true"


def answers(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """True when a MongoDB-compatible server answers ``ping`` at host:port."""
    client: MongoClient = MongoClient(
        server_uri(host, port),
        serverSelectionTimeoutMS=int(timeout_s * 1000),
        connectTimeoutMS=int(timeout_s * 1000),
    )
    try:
        client.admin.command("ping")
        return True
    except PyMongoError:
        return False
    finally:
        client.close()


def free_port(host: str = DEFAULT_HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _daemon_executable() -> str:
    found = shutil.which("secantusd-py", path=str(Path(sys.executable).parent))
    if found is None:
        raise EmbeddedServerError(
            "secantusd-py is not installed in this environment; run `make install` first"
        )
    return found


def _wait_until_answering(host: str, port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EmbeddedServerError(
                f"the embedded database exited with code {proc.returncode} while starting"
            )
        if answers(host, port, timeout_s=0.5):
            return
        time.sleep(0.1)
    raise EmbeddedServerError(f"the embedded database did not answer on {host}:{port}")


@dataclass
class EphemeralServer:
    """An in-memory server on a free port, for one test session; stopped with :meth:`stop`."""

    host: str = DEFAULT_HOST
    port: int = 0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def uri(self) -> str:
        return server_uri(self.host, self.port)

    def start(self) -> EphemeralServer:
        for _attempt in range(3):
            self.port = free_port(self.host)
            self.proc = subprocess.Popen(
                [
                    _daemon_executable(),
                    "--host",
                    self.host,
                    "--port",
                    str(self.port),
                    "--storage-path",
                    ":memory:",
                    "--log-level",
                    "WARNING",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                _wait_until_answering(self.host, self.port, self.proc)
                return self
            except EmbeddedServerError:
                # Another process may have taken the port between choosing and binding it.
                self.stop()
        raise EmbeddedServerError("could not start a throwaway embedded database")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _read_pid(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return pid


def daemon_start(
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    data_dir: Path = DEFAULT_DATA_DIR,
    pid_file: Path = PID_FILE,
    log_file: Path = LOG_FILE,
) -> bool:
    """Start the persistent development server unless one already answers.

    Returns True when this call started it, False when a server was already there.
    """
    if answers(host, port):
        return False
    if _read_pid(pid_file) is not None:
        raise EmbeddedServerError(
            f"a database process from {pid_file} is alive but does not answer on {host}:{port}"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            [
                _daemon_executable(),
                "--host",
                host,
                "--port",
                str(port),
                "--storage-path",
                str(data_dir),
                "--log-level",
                "WARNING",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # survives the shell that started it, ignores its Ctrl-C
            cwd=str(data_dir),
        )
    pid_file.write_text(f"{proc.pid}\n")
    try:
        _wait_until_answering(host, port, proc)
    except EmbeddedServerError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        pid_file.unlink(missing_ok=True)
        raise
    return True


def daemon_stop(*, pid_file: Path = PID_FILE) -> bool:
    """Stop the daemon started by :func:`daemon_start`, letting it close its storage cleanly.

    Returns True when a server was stopped.
    """
    pid = _read_pid(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    else:
        raise EmbeddedServerError(f"the embedded database (pid {pid}) did not stop in time")
    pid_file.unlink(missing_ok=True)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sibling.embedded")
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    args = parser.parse_args(argv)
    if os.environ.get("MONGODB_URI"):
        print("MONGODB_URI is set: the embedded database is not used.")
        return 0
    try:
        if args.action == "start":
            started = daemon_start(port=args.port)
            state = "started" if started else "already running"
            print(f"embedded database {state} at {server_uri(DEFAULT_HOST, args.port)}")
        elif args.action == "stop":
            stopped = daemon_stop()
            print("embedded database stopped" if stopped else "embedded database was not running")
        else:
            up = answers(DEFAULT_HOST, args.port)
            print(f"embedded database {'answers' if up else 'is down'} on port {args.port}")
            return 0 if up else 1
    except EmbeddedServerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
