"""GET /healthz: database, key vault and worker heartbeat, 200 or 503 naming what fails."""

from datetime import timedelta

import pytest
from django.utils import timezone

from sibling.models import WorkerHeartbeat
from sibling.services import worker_heartbeat_record

pytestmark = pytest.mark.django_db


def test_healthy_when_a_worker_beat_recently(client):
    worker_heartbeat_record()
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert {"database", "key_vault", "workers"} <= body["checks"].keys()
    assert 0 <= body["checks"]["workers"]["seconds_since_heartbeat"] < 60


def test_unhealthy_without_any_worker_heartbeat(client):
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["workers"]
    assert body["checks"]["database"]["ok"] and body["checks"]["key_vault"]["ok"]


def test_unhealthy_when_the_heartbeat_is_stale(client, settings):
    beat = worker_heartbeat_record()
    WorkerHeartbeat.objects.filter(pk=beat.pk).update(beat_at=timezone.now() - timedelta(hours=1))
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["workers"]["error"] == "heartbeat too old"


def test_unhealthy_naming_the_key_vault_when_it_cannot_be_read(client, monkeypatch):
    worker_heartbeat_record()

    def unreachable():
        raise ConnectionError("key vault down")

    monkeypatch.setattr("sibling.services.key_vault_collection", unreachable)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["failing"] == ["key_vault"]


def test_only_get(client):
    assert client.post("/healthz").status_code == 405
