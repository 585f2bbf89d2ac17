"""What every benchmark starts: a throwaway embedded database and the app (with its provider
sandbox) under gunicorn, configured through the environment before Django loads."""

from __future__ import annotations

import contextlib
import os
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
