"""Helpers for tests that start the project's own processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from django.conf import settings

BASE_DIR = Path(__file__).resolve().parent.parent
MANAGE = [sys.executable, str(BASE_DIR / "manage.py")]


def project_env(**overrides: str) -> dict[str, str]:
    """The environment of a project process that shares this test session's database."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "sibling.settings",
        "MONGODB_NAME": settings.DATABASES["default"]["NAME"],
        "SIBLING_Q_SYNC": "0",
        "PYTHONUNBUFFERED": "1",
    }
    env.update(overrides)
    return env


def start_process(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        args,
        cwd=BASE_DIR,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def kill_group(proc: subprocess.Popen[str]) -> None:
    """Last-resort cleanup: nothing a test started may outlive it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
