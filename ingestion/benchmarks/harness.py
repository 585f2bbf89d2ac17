"""What every benchmark starts: a throwaway embedded database and the app (with its provider
sandbox) under gunicorn, configured through the environment before Django loads."""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def app_under_gunicorn(
    *, database: str, gunicorn_args: list[str], env: dict[str, str] | None = None
) -> Iterator[str]:
    """Yields the app's base URL; Django is set up (and migrated) in this process too."""
    from sibling.embedded import EphemeralServer, free_port
    from sibling.master_key import master_key_generate

    server = EphemeralServer().start()
    base = f"http://127.0.0.1:{free_port()}"
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "sibling.settings",
            "DEBUG": "1",
            "MONGODB_URI": server.uri,
            "MONGODB_NAME": database,
            "SIBLING_MASTER_KEY": os.environ.get("SIBLING_MASTER_KEY") or master_key_generate(),
            "SIBLING_PUBLIC_URL": base,
            "SIBLING_SANDBOX_BASE_URL": f"{base}/sandbox",
            "SIBLING_SYNC_ON_DUE": "0",
            "LOG_LEVEL": "WARNING",
            **(env or {}),
        }
    )
    web = None
    try:
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        web = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "gunicorn"),
                "sibling.wsgi",
                "--bind",
                base.removeprefix("http://"),
                "--log-level",
                "warning",
                *gunicorn_args,
            ],
            cwd=BASE_DIR,
            env=os.environ.copy(),
        )
        _wait_http(f"{base}/login/")
        yield base
    finally:
        if web is not None:
            web.terminate()
            web.wait(timeout=30)
        server.stop()


def _wait_http(url: str, timeout_s: float = 60) -> None:
    import requests

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=10)
            return
        except requests.RequestException:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


def process_cpu_s() -> float:
    """CPU seconds (user + system) this process has used so far, all its threads included; the
    database and the app under gunicorn are other processes and not counted."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def children_cpu_s() -> float:
    """CPU seconds used so far by this process's live descendants (the database, gunicorn and
    its workers), read from /proc (Linux): where the CPU went that this process did not use."""
    ticks = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    stats: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the name: state, ppid, ... utime and stime are fields 14 and 15 of stat.
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        stats[int(entry.name)] = (int(fields[11]) + int(fields[12])) / ticks
    total, pending = 0.0, list(children.get(os.getpid(), []))
    while pending:
        pid = pending.pop()
        total += stats.get(pid, 0.0)
        pending.extend(children.get(pid, []))
    return total


def queued_tasks_run(prefix: str) -> int:
    """Run the queued tasks whose function starts with `prefix`, oldest first and one at a time
    in this process, as one worker process of the cluster runs them (the same task code); the
    number run. Nothing else consumes the queue during a benchmark. Other tasks stay queued; an
    exception is raised here rather than saved as a failed task."""
    import pydoc

    from django_q.signing import SignedPackage

    from sibling.queue import broker

    queue = broker()
    skipped: list = []
    ran = 0
    while True:
        taken = queue.collection.find_one({"_id": {"$nin": skipped}}, sort=[("_id", 1)])
        if taken is None:
            return ran
        task = SignedPackage.loads(taken["payload"])
        func = task["func"]
        name = func if isinstance(func, str) else f"{func.__module__}.{func.__qualname__}"
        if not name.startswith(prefix):
            skipped.append(taken["_id"])
            continue
        target = pydoc.locate(name) if isinstance(func, str) else func
        target(*task.get("args", ()), **task.get("kwargs", {}))
        queue.acknowledge(str(taken["_id"]))
        ran += 1
