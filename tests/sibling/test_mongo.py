"""No MongoClient crosses a fork: a forked child opens its own clients."""

import os
import warnings

import pytest
from django.contrib.auth import get_user_model
from django.db import connection

from sibling import mongo


@pytest.mark.django_db
def test_forked_child_uses_its_own_clients_and_no_inherited_one():
    get_user_model().objects.create(username="before-fork")
    parent_clients = (id(connection.connection), id(mongo.plain_client()))

    pid = os.fork()
    if pid == 0:  # the child reports through its exit code only
        code = 1
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                get_user_model().objects.create(username="in-child")
                mongo.plain_database().command("ping")
                child_clients = (id(connection.connection), id(mongo.plain_client()))
            inherited = any("before fork" in str(w.message) for w in caught)
            code = 0 if not inherited and set(child_clients).isdisjoint(parent_clients) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert get_user_model().objects.filter(username="in-child").exists()
