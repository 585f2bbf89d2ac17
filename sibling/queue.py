"""The django-q2 MongoDB broker, made fork-safe.

django-q2's sentinel creates the broker and its forked pusher, workers and monitor inherit it,
MongoClient included. This broker opens its client lazily in whichever process uses it.
"""

from __future__ import annotations

import os
from typing import Any

from django_q.brokers.mongo import Mongo
from django_q.conf import Conf
from pymongo import MongoClient
from pymongo.collection import Collection


class ForkSafeMongoBroker(Mongo):
    def __init__(self, list_key: str | None = None) -> None:
        self._pid: int | None = None
        self._client: MongoClient | None = None
        super().__init__(list_key)

    @staticmethod
    def get_connection(list_key: str | None = None) -> None:  # type: ignore[override]
        return None  # opened on first use, in the process that uses it

    @property  # type: ignore[override]
    def connection(self) -> MongoClient:
        if self._client is None or self._pid != os.getpid():
            self._client = MongoClient(**Conf.MONGO)
            self._pid = os.getpid()
        return self._client

    @connection.setter
    def connection(self, value: Any) -> None:
        pass  # Broker.__init__ assigns get_connection()'s result; the property owns the client

    @property  # type: ignore[override]
    def collection(self) -> Collection:
        return self.get_collection()

    @collection.setter
    def collection(self, value: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self._pid = None
        self._client = None
        super().__setstate__(state)


def broker() -> ForkSafeMongoBroker:
    """This process's broker: async_task() without one would open a new client every call."""
    from django_q.brokers import get_broker

    from sibling.mongo import register_process_local

    return register_process_local("q_broker", get_broker)


def schedule_ensure(*, name: str, func: str, minutes: int = 1) -> None:
    """A django-q2 schedule that runs func every `minutes`, created once (found by name)."""
    from django.utils import timezone
    from django_q.models import Schedule

    Schedule.objects.get_or_create(
        name=name,
        defaults={
            "func": func,
            "schedule_type": Schedule.MINUTES,
            "minutes": minutes,
            "repeats": -1,
            "next_run": timezone.now(),
        },
    )
