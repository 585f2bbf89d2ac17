"""MongoDB clients, one set per process, never carried across a fork.

PyMongo is not fork-safe: a client created in a parent and used in a forked child can deadlock
(a qcluster that processed a task and then hung on SIGTERM was seen on this stack). django-q2 forks
its workers, so every client this project holds is created lazily per process, and a forked child
forgets what it inherited (Django's connections included) and opens its own on first use.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from django.conf import settings
from django.db import connections
from pymongo import MongoClient
from pymongo.database import Database

_lock = threading.RLock()  # factories may build the clients they depend on
_clients: dict[str, MongoClient] = {}
_owner_pid = os.getpid()
# Inherited clients are kept referenced, never closed or used: closing one in the child would
# act on sockets and threads that belong to the parent.
_inherited: list[Any] = []


def database_uri() -> str:
    return settings.DATABASES["default"]["HOST"]


def database_name() -> str:
    return settings.DATABASES["default"]["NAME"]


def plain_client() -> MongoClient:
    """A client without automatic decryption: raw documents exactly as stored."""
    return _client("plain", lambda: MongoClient(database_uri(), tz_aware=True))


def plain_database() -> Database:
    return plain_client()[database_name()]


def _client(name: str, factory: Any) -> MongoClient:
    _forget_if_forked()
    client = _clients.get(name)
    if client is None:
        with _lock:
            client = _clients.get(name)
            if client is None:
                client = _clients[name] = factory()
    return client


def register_process_local(name: str, factory: Any) -> Any:
    """A per-process singleton (a client, or an object holding one) built by factory()."""
    return _client(name, factory)


def process_local_forget(name: str) -> None:
    """Drop a per-process singleton (it is rebuilt on next use); it is not closed."""
    with _lock:
        _inherited.append(_clients.pop(name, None))


def _forget_if_forked() -> None:
    global _owner_pid
    if _owner_pid != os.getpid():
        _after_fork_in_child()


def _after_fork_in_child() -> None:
    global _owner_pid
    _owner_pid = os.getpid()
    _inherited.extend(_clients.values())
    _clients.clear()
    # Django's MongoDB backend keeps one MongoClient per alias in a class-level pool and a
    # reference on each connection wrapper; drop both so the child connects afresh.
    from django_mongodb_backend.base import DatabaseWrapper

    _inherited.extend(DatabaseWrapper._connection_pools.values())
    DatabaseWrapper._connection_pools.clear()
    for conn in connections.all(initialized_only=True):
        if getattr(conn, "connection", None) is not None:
            _inherited.append(conn.connection)
            conn.connection = None
            conn.session = None
            conn.__dict__.pop("database", None)


def close_all() -> None:
    """Close this process's clients (at shutdown, or in tests)."""
    with _lock:
        for client in _clients.values():
            if hasattr(client, "close"):
                client.close()
        _clients.clear()
    for conn in connections.all(initialized_only=True):
        conn.close_pool()


os.register_at_fork(after_in_child=_after_fork_in_child)
