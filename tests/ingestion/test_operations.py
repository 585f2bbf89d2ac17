"""Operators' tools: reprocess from raw pages, sync from the command line, metrics, dashboard,
and the sync log context."""

import logging
import threading
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from prometheus_client.parser import text_string_to_metric_families

from ingestion.management.commands import sync as sync_command
from ingestion.models import QuarantinedItem, SyncRun
from ingestion.runner import connection_sync
from ingestion.scheduler import connection_lease_release
from ingestion.storage import records_collection
from tests.factories import UserFactory
from tests.ingestion.conftest import NO_WAIT, fresh, hold_lease, wait_until
from tests.sources.providers.kit import sandbox_fault

pytestmark = pytest.mark.django_db(transaction=True)


def test_reprocess_replays_raw_pages_without_calling_the_provider(link_connection, settings):
    connection_sync(link_connection.pk, policy=NO_WAIT)
    collection = records_collection("external_data")
    before = collection.count_documents({"connection": link_connection.pk})
    collection.delete_many({"connection": link_connection.pk})
    settings.SIBLING_SANDBOX_BASE_URL = "http://127.0.0.1:9/sandbox"  # the provider is gone
    out = StringIO()
    call_command(
        "reprocess",
        "--provider",
        link_connection.provider,
        "--user",
        link_connection.user.username,
        stdout=out,
    )
    assert "pages replayed" in out.getvalue()
    assert collection.count_documents({"connection": link_connection.pk}) == before


def test_reprocess_does_not_duplicate_quarantine(link_connection):
    sandbox_fault(link_connection, "malformed")
    connection_sync(link_connection.pk, policy=NO_WAIT)
    quarantined = QuarantinedItem.objects.filter(connection=link_connection).count()
    assert quarantined
    call_command("reprocess", "--provider", link_connection.provider, stdout=StringIO())
    assert QuarantinedItem.objects.filter(connection=link_connection).count() == quarantined


def test_sync_command_shows_progress_and_the_outcome(key_connection):
    out = StringIO()
    call_command("sync", str(key_connection.pk), stdout=out)
    text = out.getvalue()
    assert "] 100%" in text and "success" in text
    assert SyncRun.objects.get(connection=key_connection).trigger == SyncRun.Trigger.MANUAL


def test_sync_command_on_a_busy_connection_says_so_and_leaves_the_holder_alone(
    key_connection,
):
    owner, holder = hold_lease(key_connection)
    out = StringIO()
    with pytest.raises(CommandError, match="busy"):
        call_command("sync", str(key_connection.pk), stdout=out)
    assert "busy: another sync of this connection is running" in out.getvalue()
    holder.refresh_from_db()
    assert holder.outcome == SyncRun.Outcome.RUNNING
    assert fresh(key_connection).lease_owner == owner
    assert SyncRun.objects.filter(connection=key_connection).count() == 1


def test_sync_command_with_wait_syncs_once_the_holder_is_done(key_connection, monkeypatch):
    monkeypatch.setattr(sync_command, "WAIT_POLL_S", 0.05)
    owner, holder = hold_lease(key_connection)
    out = StringIO()

    def holder_finishes() -> None:
        wait_until(lambda: "waiting" in out.getvalue())
        SyncRun.objects.filter(pk=holder.pk).update(outcome=SyncRun.Outcome.SUCCESS)
        connection_lease_release(connection_id=key_connection.pk, owner=owner)

    worker = threading.Thread(target=holder_finishes)
    worker.start()
    call_command("sync", str(key_connection.pk), "--wait", stdout=out)
    worker.join()
    assert "success" in out.getvalue()
    manual = SyncRun.objects.get(connection=key_connection, trigger=SyncRun.Trigger.MANUAL)
    assert manual.outcome == SyncRun.Outcome.SUCCESS and manual.started_at >= holder.started_at
    assert SyncRun.objects.get(pk=holder.pk).outcome == SyncRun.Outcome.SUCCESS
    assert fresh(key_connection).lease_owner == ""


def test_sync_log_lines_carry_the_run_context_and_no_secret(key_connection, caplog):
    with caplog.at_level(logging.INFO, logger="ingestion.runner"):
        run = connection_sync(key_connection.pk, policy=NO_WAIT)
    lines = [r for r in caplog.records if r.name == "ingestion.runner"]
    assert lines and all(
        r.run == str(run.pk) and r.provider == key_connection.provider for r in lines
    )
    assert key_connection.sandbox_account not in caplog.text


def test_metrics_are_for_operators_only(client, key_connection, settings):
    connection_sync(key_connection.pk, policy=NO_WAIT)
    assert client.get("/metrics").status_code == 403
    settings.SIBLING_METRICS_TOKEN = "operator-token"
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer operator-token")
    body = response.content.decode()
    assert response.status_code == 200
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }
    runs = (
        "sibling_sync_runs_total",
        (("outcome", "success"), ("provider", key_connection.provider)),
    )
    assert samples[runs] == 1
    assert "sibling_queue_depth" in body and "sibling_oldest_due_connection_age_seconds" in body


def test_staff_dashboard(client, key_connection):
    connection_sync(key_connection.pk, policy=NO_WAIT)
    client.force_login(
        UserFactory(is_staff=True, is_superuser=True),
        backend="django.contrib.auth.backends.ModelBackend",
    )
    page = client.get(reverse("sync_dashboard"))
    text = page.content.decode()
    assert page.status_code == 200
    assert "Connections by status" in text and key_connection.provider in text
    assert page.context["chart"][0]["total"] > 0
