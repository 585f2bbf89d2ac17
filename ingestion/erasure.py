"""Erasing a person: grants revoked, every record and trace deleted, then the data key destroyed.

Destroying the person's data key is what makes the erasure hold everywhere: any ciphertext of
theirs left in a backup, a replica or a collection missed here can no longer be decrypted
(crypto-shredding). Running processes forget the key within their cache lifetime (about a
minute); this process forgets it at once.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone
from django.utils.crypto import salted_hmac
from social_django.models import UserSocialAuth

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
from sibling import mongo
from sibling.encryption import client_encryption, data_key_forget, data_key_id
from sources.models import UserDataSource
from sources.services import connection_disconnect

logger = logging.getLogger(__name__)


@dataclass
class ErasureReport:
    counts: Counter = field(default_factory=Counter)
    revoke_failures: list[str] = field(default_factory=list)
    key_destroyed: bool = False


def erasure_subject(user_id: Any) -> str:
    return salted_hmac("sibling.erasure-subject", str(user_id), algorithm="sha256").hexdigest()


def person_erase(*, user: AbstractBaseUser) -> ErasureReport:
    """Erase everything Sibling holds about this person, their account included."""
    report = ErasureReport()
    user_id = user.pk
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
            result = connection_disconnect(connection=connection, delete_data=True)
            if result.revoke_error:
                report.revoke_failures.append(result.provider_name)
    for name in collections:
        records_collection(name).delete_many({"user": user_id})
    for _label, model in traces:
        model.objects.filter(user_id=user_id).delete()
    report.key_destroyed = _data_key_destroy(user_id)
    user.delete()
    ErasureRecord.objects.create(
        subject=erasure_subject(user_id),
        erased_at=timezone.now(),
        counts=dict(report.counts),
        revoke_failures=report.revoke_failures,
        key_destroyed=report.key_destroyed,
    )
    logger.info("a person was erased: %s", dict(report.counts))
    return report


def _data_key_destroy(user_id: Any) -> bool:
    key_id = data_key_id(user_id, create=False)
    if key_id is None:
        return False
    client_encryption().delete_key(key_id)
    data_key_forget(user_id)
    # This process's clients cache data keys; new ones start without this person's.
    mongo.process_local_forget("client_encryption")
    return True
