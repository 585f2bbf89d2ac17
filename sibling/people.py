"""A person's settings row (``sibling.models.Person``): made the first time it is needed."""

from __future__ import annotations

import zoneinfo
from functools import lru_cache
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import IntegrityError

from sibling.models import Person

DEFAULT_TIME_ZONE = "UTC"


# Names the tz database lists that are no place: "localtime" is whatever zone the server runs in,
# "Factory" a placeholder for machines not yet set up.
NOT_PLACES = frozenset({"localtime", "Factory", "posixrules"})


@lru_cache(maxsize=1)
def time_zone_names() -> frozenset[str]:
    """Every IANA time zone name this machine knows (places only, see ``NOT_PLACES``)."""
    return frozenset(zoneinfo.available_timezones()) - NOT_PLACES


def time_zone_valid(name: str) -> bool:
    return name in time_zone_names()


def person_of(user: AbstractBaseUser | Any) -> Person:
    """The person's settings row, made (with the defaults) if it does not exist yet."""
    user_id = getattr(user, "pk", user)
    person = Person.objects.filter(user_id=user_id).first()
    if person is not None:
        return person
    try:
        return Person.objects.create(user_id=user_id)
    except IntegrityError:  # made by a concurrent request meanwhile
        return Person.objects.get(user_id=user_id)


def person_zone(user: AbstractBaseUser | Any) -> zoneinfo.ZoneInfo:
    """The person's time zone: UTC if they have no settings row yet, or if theirs is unknown
    to this machine (its tz database is older).

    One indexed read, and only a read: it serves every signed-in request and syncs, which must
    not bring a row back for a person whose erasure is under way (their account may be gone).
    """
    user_id = getattr(user, "pk", user)
    name = Person.objects.filter(user_id=user_id).values_list("time_zone", flat=True).first()
    return zoneinfo.ZoneInfo(name if name and time_zone_valid(name) else DEFAULT_TIME_ZONE)
