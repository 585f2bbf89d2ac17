"""Erasing a person: fenced first, grants revoked, every record and trace deleted, then the data
key destroyed.

The erasure's record is written first, not completed (``ingestion.fence``): from that moment the
person's running syncs and event batches stop at their next page and no flow can create a data
key for them. Only then is everything deleted.

Destroying the person's data key is what makes the erasure hold everywhere: any ciphertext of
theirs left in a backup, a replica or a collection missed here can no longer be decrypted
(crypto-shredding). Running processes forget the key within their cache lifetime (about a
minute); this process forgets it at once.

A sync in another process that passed the fence just before it was set may still write one
page, and (while that process still holds the key) write it readable for a minute. So the
erasure sweeps once more right after destroying the key, and schedules a last sweep
(``ERASURE_SWEEP_DELAY``) for after every process's key cache has expired. The sweep works on
the raw collections, never decrypting, since anything it finds may be under a destroyed key.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from bson import ObjectId
from django.apps import apps
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import models
from django.utils import timezone
from social_django.models import UserSocialAuth

from ingestion.fence import erasure_subject
from ingestion.models import (
    ApiToken,
    ErasureRecord,
    QuarantinedItem,
    RawPage,
    SyncRun,
    WebhookEvent,
)
from ingestion.schemas import CATEGORY_COLLECTIONS
from ingestion.storage import records_collection
from outbound.emit import person_erased_emit
from sibling import mongo
from sibling.encryption import (
    client_encryption,
    data_key_alt_name,
    data_key_forget,
    data_key_id,
    key_vault_collection,
)
from sibling.models import Person
from sources.models import UserDataSource
from sources.revocations import person_revocations_settle
from sources.services import connection_disconnect

logger = logging.getLogger(__name__)


@dataclass
class ErasureReport:
    counts: Counter = field(default_factory=Counter)
    revoke_failures: list[str] = field(default_factory=list)
    key_destroyed: bool = False


# pymongo caches data keys for about a minute in every process; the last sweep runs after.
ERASURE_SWEEP_DELAY = timedelta(minutes=2)


def person_erase(*, user: AbstractBaseUser) -> ErasureReport:
    """Erase everything Sibling holds about this person, their account included.

    The fence comes first and is never lifted: an erasure that fails half way can be run again,
    and the person stays fenced meanwhile.
    """
    report = ErasureReport()
    user_id = user.pk
    fence = _fence_set(user_id)
    collections = sorted(set(CATEGORY_COLLECTIONS.values()))
    traces = (
        ("raw_pages", RawPage),
        ("quarantined", QuarantinedItem),
        ("webhook_events", WebhookEvent),
        ("sync_runs", SyncRun),
        ("api_tokens", ApiToken),
        ("linked_accounts", UserSocialAuth),
    )
    # Counted first: deleting connections already takes their records and history with them.
    report.counts["connections"] = UserDataSource.objects.filter(user=user).count()
    report.counts["records"] = sum(
        records_collection(name).count_documents({"user": user_id}) for name in collections
    )
    for label, model in traces:
        report.counts[label] = model.objects.filter(user_id=user_id).count()

    for connection in UserDataSource.objects.filter(user=user):
        if connection.status == UserDataSource.Status.DISCONNECTED:
            connection.delete()
        else:
            # No pending revocation is kept: its token would be new ciphertext of the person's.
            result = connection_disconnect(
                connection=connection, delete_data=True, keep_pending=False
            )
            if result.revoke_error:
                report.revoke_failures.append(result.provider_name)
    # Revocations still pending from earlier disconnects get a last attempt (their tokens are
    # under the key about to be destroyed), then go.
    report.revoke_failures += person_revocations_settle(user_id=user_id)
    for name in collections:
        records_collection(name).delete_many({"user": user_id})
    for _label, model in traces:
        model.objects.filter(user_id=user_id).delete()
    report.key_destroyed = _data_key_destroy(user_id)
    # Read before the account (and the Person row with it) goes; None if no event ever named
    # the person, in which case no subscriber knows them.
    public_id = Person.objects.filter(user_id=user_id).values_list("public_id", flat=True).first()
    user.delete()
    # Whatever a sync that passed the fence before it was set wrote meanwhile. After the
    # account's own deletion, so that what the sweep finds (and reports) is only that.
    person_erase_sweep(user_id)
    _sweep_schedule(user_id)
    fence.erased_at = timezone.now()
    fence.counts = dict(report.counts)
    fence.revoke_failures = report.revoke_failures
    fence.key_destroyed = report.key_destroyed
    fence.completed = True
    fence.save()
    if public_id is not None:
        person_erased_emit(public_id=public_id)
    logger.info("a person was erased: %s", dict(report.counts))
    return report


def _fence_set(user_id: Any) -> ErasureRecord:
    subject = erasure_subject(user_id)
    fence = ErasureRecord.objects.filter(subject=subject, completed=False).first()
    if fence is None:
        fence = ErasureRecord.objects.create(
            subject=subject, erased_at=timezone.now(), completed=False
        )
    return fence


def person_erase_sweep(user_id: Any) -> Counter:
    """Delete, once more, anything of this person's that a racing write left: their records,
    and every row that belongs to them or to one of their connections (by its foreign keys,
    so a model added later is swept too), and their data key. Idempotent; never decrypts.
    """
    user_id = (
        ObjectId(user_id) if isinstance(user_id, str) and ObjectId.is_valid(user_id) else user_id
    )
    database = mongo.plain_database()
    swept: Counter = Counter()
    for name in sorted(set(CATEGORY_COLLECTIONS.values())):
        swept["records"] += records_collection(name).delete_many({"user": user_id}).deleted_count
    connections_table = database[UserDataSource._meta.db_table]
    connection_ids = [d["_id"] for d in connections_table.find({"user_id": user_id}, {"_id": 1})]
    user_model = get_user_model()
    for model in apps.get_models():
        filters = []
        for f in model._meta.concrete_fields:
            # One-to-one rows too (the person's settings row, which a racing event could make).
            if (
                not (f.many_to_one or f.one_to_one)
                or f.remote_field.on_delete is not models.CASCADE
            ):
                continue
            if f.related_model is user_model:
                filters.append({f.column: user_id})
            elif f.related_model is UserDataSource and connection_ids:
                filters.append({f.column: {"$in": connection_ids}})
        for query in filters:
            deleted = database[model._meta.db_table].delete_many(query).deleted_count
            if deleted:
                swept[model._meta.label] += deleted
    swept["keys"] = (
        key_vault_collection()
        .delete_many({"keyAltNames": data_key_alt_name(user_id)})
        .deleted_count
    )
    data_key_forget(user_id)
    if any(swept.values()):
        logger.warning("an erasure's sweep removed late writes: %s", dict(swept))
    return swept


def _sweep_schedule(user_id: Any) -> None:
    """The last sweep, once every process has dropped its cached copy of the key. Its one
    argument, the person's id, stays in the queue until it has run; its result is not kept."""
    from django_q.models import Schedule

    Schedule.objects.create(
        func="ingestion.erasure.person_erase_sweep",
        args=repr((str(user_id),)),
        kwargs=repr({"q_options": {"save": False}}),
        schedule_type=Schedule.ONCE,
        repeats=-1,
        next_run=timezone.now() + ERASURE_SWEEP_DELAY,
    )


def _data_key_destroy(user_id: Any) -> bool:
    key_id = data_key_id(user_id, create=False)
    if key_id is None:
        return False
    client_encryption().delete_key(key_id)
    data_key_forget(user_id)
    # This process's clients cache data keys; new ones start without this person's.
    mongo.process_local_forget("client_encryption")
    return True
