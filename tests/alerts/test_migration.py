"""The alerts app's migration matches its model, and the incident key is looked up through a
plain unique index (the embedded server scans past the backend's partial ones)."""

import json
from io import StringIO

import pytest
from django.core.management import call_command

from alerts.models import Incident
from alerts.services import email_due_filter

pytestmark = pytest.mark.django_db


def test_the_migration_matches_the_model():
    out = StringIO()
    call_command("makemigrations", "alerts", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()


def test_the_incident_key_is_a_plain_unique_index_used_for_lookups(raw_db):
    collection = raw_db[Incident._meta.db_table]
    index = next(i for i in collection.list_indexes() if i["name"] == "alert_incident_key")
    assert index["unique"] and "partialFilterExpression" not in index
    plan = collection.find({"key": "open:x:stopped"}).explain()["queryPlanner"]["winningPlan"]
    assert "alert_incident_key" in json.dumps(plan)


def test_the_sweep_of_due_emails_uses_its_index(raw_db):
    from django.utils import timezone

    collection = raw_db[Incident._meta.db_table]
    query = {"email_state": "pending", "email_next_attempt_at": {"$lte": timezone.now()}}
    plan = collection.find(query).explain()["queryPlanner"]["winningPlan"]
    assert "alert_email_due" in json.dumps(plan)
    # The filter the sweep sends (waiting, or claimed by a sender that may have died).
    for state in ("pending", "sending"):
        plan = collection.find(email_due_filter(state, timezone.now())).explain()
        assert "alert_email_due" in json.dumps(plan["queryPlanner"]["winningPlan"], default=str)
    # And it puts them off by id.
    from bson import ObjectId

    assert "COLLSCAN" not in Incident.objects.filter(pk__in=[ObjectId(), ObjectId()]).explain()


def test_migrate_schedules_the_sweep_of_due_emails_once():
    from django.apps import apps
    from django_q.models import Schedule

    from alerts.signals import setup_after_migrate

    for _ in range(2):
        setup_after_migrate(sender=None, app_config=apps.get_app_config("alerts"))
    schedules = Schedule.objects.filter(name="alerts-email-due")
    assert [s.func for s in schedules] == ["alerts.tasks.incidents_email_due"]
