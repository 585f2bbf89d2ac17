"""Gmail's push watch: renewed daily for every active mailbox (a watch lasts 7 days)."""

from __future__ import annotations

import logging

from django.conf import settings

from sources.models import UserDataSource
from sources.providers.gmail.provider import Gmail
from sources.providers.gmail.webhooks import watch_renew

logger = logging.getLogger(__name__)


def watch_renew_all() -> int:
    if not settings.GMAIL_PUSH_TOPIC:
        return 0
    renewed = 0
    for connection in UserDataSource.objects.filter(
        provider=Gmail.id, status=UserDataSource.Status.ACTIVE
    ).iterator():
        try:
            watch_renew(connection)
            renewed += 1
        except Exception as err:  # one mailbox's failure must not stop the others
            logger.warning(
                "gmail watch renewal failed for %s: %s", connection.pk, type(err).__name__
            )
    return renewed


def watch_renew_one(connection_id: str) -> bool:
    from bson import ObjectId

    connection = UserDataSource.objects.filter(pk=ObjectId(connection_id)).first()
    if connection is None or not settings.GMAIL_PUSH_TOPIC:
        return False
    watch_renew(connection)
    return True
