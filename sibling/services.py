"""Operations services: worker heartbeats and the health report."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from sibling.encryption import key_vault_collection
from sibling.models import WorkerHeartbeat
from sibling.queue import schedule_ensure

HEARTBEAT_SCHEDULE_NAME = "worker-heartbeat"


def worker_heartbeat_record() -> WorkerHeartbeat:
    """Record that a worker of this cluster is alive and processing tasks."""
    beat, _ = WorkerHeartbeat.objects.update_or_create(
        cluster=settings.Q_CLUSTER["name"],
        defaults={"host": socket.gethostname(), "pid": os.getpid(), "beat_at": timezone.now()},
    )
    return beat


def worker_heartbeat_schedule_ensure() -> None:
    schedule_ensure(name=HEARTBEAT_SCHEDULE_NAME, func="sibling.tasks.worker_heartbeat")


@dataclass
class HealthReport:
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return all(check["ok"] for check in self.checks.values())

    @property
    def failing(self) -> list[str]:
        return [name for name, check in self.checks.items() if not check["ok"]]

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"status": "ok" if self.healthy else "unhealthy"}
        if not self.healthy:
            body["failing"] = self.failing
        body["checks"] = self.checks
        return body


def _timed(check: Any) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        result = {"ok": True, **(check() or {})}
    except Exception as err:  # a health check reports every failure, never raises
        result = {"ok": False, "error": type(err).__name__}
    result["ms"] = round((time.perf_counter() - started) * 1000, 1)
    return result


def _database() -> dict[str, Any]:
    connection.ensure_connection()
    connection.connection.admin.command("ping")
    return {}


def _key_vault() -> dict[str, Any]:
    key_vault_collection().find_one({}, projection={"_id": 1})
    return {}


def _workers() -> dict[str, Any]:
    beat = WorkerHeartbeat.objects.order_by("-beat_at").first()
    max_age = settings.SIBLING_WORKER_HEARTBEAT_MAX_AGE
    if beat is None:
        return {"ok": False, "seconds_since_heartbeat": None, "error": "no heartbeat recorded"}
    age = round((timezone.now() - beat.beat_at).total_seconds(), 1)
    result: dict[str, Any] = {"seconds_since_heartbeat": age, "max_age": max_age}
    if age > max_age:
        result.update(ok=False, error="heartbeat too old")
    return result


def health_report() -> HealthReport:
    report = HealthReport()
    report.checks["database"] = _timed(_database)
    report.checks["key_vault"] = _timed(_key_vault)
    report.checks["workers"] = _timed(_workers)
    return report
