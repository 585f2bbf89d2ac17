"""A real qcluster: runs a task through the MongoDB broker and stops cleanly on SIGTERM."""

import signal
import subprocess
import time

import pytest
from django.conf import settings
from django_q.conf import Conf
from django_q.models import Task
from django_q.tasks import async_task

from sibling.models import WorkerHeartbeat
from tests.helpers import MANAGE, group_alive, kill_group, project_env, start_process

pytestmark = pytest.mark.django_db

STOP_DEADLINE_S = 10


@pytest.fixture
def broker_db(monkeypatch):
    # django-q2 read the database name before the test database existed.
    monkeypatch.setattr(Conf, "MONGO_DB", settings.DATABASES["default"]["NAME"])


def _wait_for_task(task_id: str, timeout_s: float = 60) -> Task:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        task = Task.objects.filter(id=task_id).first()
        if task is not None:
            return task
        time.sleep(0.2)
    raise AssertionError(f"task {task_id} was not processed within {timeout_s}s")


@pytest.mark.parametrize("run", range(3))  # a fork-inherited client hangs only sometimes
def test_qcluster_runs_a_task_then_stops_on_sigterm_in_time(broker_db, run):
    proc = start_process([*MANAGE, "qcluster"], project_env())
    try:
        task_id = async_task("sibling.tasks.worker_heartbeat", sync=False)
        task = _wait_for_task(task_id)
        assert task.success, task.result
        assert WorkerHeartbeat.objects.get(cluster=settings.Q_CLUSTER["name"]).pid != proc.pid

        proc.send_signal(signal.SIGTERM)
        try:
            output, _ = proc.communicate(timeout=STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"qcluster did not stop within {STOP_DEADLINE_S}s of SIGTERM")
        assert proc.returncode == 0, output
        assert "opened before fork" not in output
        assert "has stopped" in output
        assert not group_alive(proc.pid), "a worker process outlived its cluster"
    finally:
        kill_group(proc)
