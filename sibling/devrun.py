"""``make run``: the embedded database, migrations, a development superuser, the web server and
one worker cluster, stopped together by Ctrl-C with nothing left behind.

Each child runs in its own process group so that everything it spawns (runserver's reloader
child, qcluster's workers) is stopped with it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sibling import embedded

BASE_DIR = Path(__file__).resolve().parent.parent
MANAGE = [sys.executable, str(BASE_DIR / "manage.py")]
STOP_TIMEOUT_S = 15.0


def _start(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, cwd=BASE_DIR, start_new_session=True)


def _stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    # The leader stops its own children (qcluster its workers, runserver its reloaded child);
    # signalling the whole group at once would interrupt that orderly stop.
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for proc in procs:
        # Whatever is left of the group (a proc that exited before its children) goes too.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sibling.settings")
    port = os.environ.get("PORT", "8000")
    started_db = False
    if not os.environ.get("MONGODB_URI"):
        started_db = embedded.daemon_start()
        print(f"Embedded database at {embedded.server_uri(embedded.DEFAULT_HOST, 27117)}")
    procs: list[subprocess.Popen[bytes]] = []
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        subprocess.run([*MANAGE, "migrate", "--noinput"], cwd=BASE_DIR, check=True)
        subprocess.run([*MANAGE, "ensure_dev_superuser"], cwd=BASE_DIR, check=True)
        # With the sandbox on, a subscriber of the change notifications pointing at the sandbox's
        # verifying receiver, so deliveries show end to end (admin: Subscribers, Deliveries).
        subprocess.run(
            [
                *MANAGE,
                "shell",
                "-c",
                "from django.conf import settings\n"
                "if settings.SIBLING_SANDBOX_ALLOWED:\n"
                "    from sources.sandbox.receiver import dev_subscriber_ensure\n"
                "    print(dev_subscriber_ensure())",
            ],
            cwd=BASE_DIR,
            check=True,
        )
        procs.append(_start([*MANAGE, "runserver", f"127.0.0.1:{port}"]))
        procs.append(_start([*MANAGE, "qcluster"]))
        # The schedule beats every minute; one beat now makes /healthz green from the start.
        subprocess.run(
            [
                *MANAGE,
                "shell",
                "-c",
                "from django_q.tasks import async_task; "
                "async_task('sibling.tasks.worker_heartbeat')",
            ],
            cwd=BASE_DIR,
            check=True,
        )
        base = f"http://127.0.0.1:{port}"
        print(f"\n  Site:   {base}/\n  Admin:  {base}/admin/\n  Health: {base}/healthz\n")
        print("Press Ctrl-C to stop the web server, the workers and the embedded database.")
        while not stopping and all(proc.poll() is None for proc in procs):
            time.sleep(0.2)
        return 0 if stopping else 1
    except subprocess.CalledProcessError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        _stop_all(procs)
        if started_db:
            embedded.daemon_stop()
            print("Embedded database stopped.")


if __name__ == "__main__":
    sys.exit(main())
