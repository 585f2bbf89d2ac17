"""`make run`'s supervisor: everything comes up, the printed login works, Ctrl-C leaves nothing."""

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from sibling.embedded import free_port
from tests.helpers import kill_group, project_env, start_process


def _processes_with_marker(marker: str) -> list[int]:
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker.encode() in environ.read_bytes():
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return found


def _wait_for_health(base: str, timeout_s: float = 90) -> requests.Response:
    deadline = time.monotonic() + timeout_s
    last: requests.Response | None = None
    while time.monotonic() < deadline:
        try:
            last = requests.get(f"{base}/healthz", timeout=5)
            if last.status_code == 200:
                return last
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"/healthz never answered 200: {last and last.text}")


def test_make_run_brings_everything_up_and_ctrl_c_stops_it_all(tmp_path):
    port = free_port()
    marker = f"SIBLING_TEST_MARKER_{uuid.uuid4().hex}"
    env = project_env(
        PORT=str(port),
        MONGODB_NAME=f"devrun_{uuid.uuid4().hex[:8]}",
        SIBLING_VAR_DIR=str(tmp_path),
        DEBUG="1",
        **{marker: "1"},
    )
    proc = start_process([sys.executable, "-m", "sibling.devrun"], env)
    output_lines: list[str] = []
    try:
        base = f"http://127.0.0.1:{port}"
        # Read until the URLs are printed (after migrate and the superuser).
        while not any("Health:" in line for line in output_lines):
            line = proc.stdout.readline()
            assert line, "make run exited early:\n" + "".join(output_lines)
            output_lines.append(line)
        output = "".join(output_lines)
        login = re.search(r"Admin login: (\S+) / (\S+)", output)
        assert login, output
        assert f"{base}/admin/" in output

        assert _wait_for_health(base).json()["status"] == "ok"

        session = requests.Session()
        page = session.get(f"{base}/admin/login/", timeout=10)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        answer = session.post(
            f"{base}/admin/login/?next=/admin/",
            data={"username": login[1], "password": login[2], "csrfmiddlewaretoken": token},
            headers={"Referer": f"{base}/admin/login/"},
            timeout=10,
        )
        assert answer.status_code == 200 and "Site administration" in answer.text

        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("make run did not stop within 30s of Ctrl-C")
        assert proc.returncode == 0
        deadline = time.monotonic() + 5
        while _processes_with_marker(marker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _processes_with_marker(marker) == [], "a process outlived make run"
    finally:
        kill_group(proc)
        for pid in _processes_with_marker(marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
