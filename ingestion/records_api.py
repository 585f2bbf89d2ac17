"""The records API (``/api/v1/``): a person's records and connections, decrypted for the caller.

Callers: a person's own API token with ``records:read`` (their data only), or a service token
(Sibling's other modules) whose ``read:<category>`` scopes say which categories it reads, of the
one person it is restricted to or of the person each request names (``person``, a public id).
Every service read is counted in the person's access ledger (``ledger.service_read_record``).

**Order and cursor.** Records are listed by ``(updated_at, _id)``, through the index
``user_updated`` (``storage.RECORD_INDEXES``); the cursor is that position (opaque, base64 of
JSON), so a write elsewhere in the order never shifts a page. A pass (the first page and every
``next`` after it) lists the records stored up to its **horizon**, fixed on its first page at
that moment less ``SIBLING_RECORDS_API_SETTLE_S`` (5 s): a page of records is stamped with one
``updated_at`` when its store starts and becomes visible chunk by chunk while it is written, so
a record newer than the horizon may still have older-stamped siblings on their way. With that
margin longer than any page's write, a pass

- lists every record stored at least the margin before the pass began and not changed since;
- lists no record twice, unless it was written again during the pass (it then moves to its new
  place in the order, which is listed if it is still before the horizon);
- lists a record changed during the pass at most at its new place; the next pass (from
  ``changed_since``) sees the rest.

**Why windows.** The embedded server reads the whole index range a query names before it sorts
and limits (a page of 100 out of 40,000 records took 3 to 4 s), so every query names a bounded
``updated_at`` window of one person: windows grow 8-fold while they are empty and shrink after
a dense one (the size travels in the cursor), the first starts at the person's sign-up, and a
request stops after ``MAX_QUERIES`` queries or ``MAX_EXAMINED`` records: its page may then be
short (even empty) with a ``next``. Clients follow ``next`` until it is null. Every query names
exactly ``user`` and ``updated_at`` (and ``_id`` for records stamped at the cursor's own time):
a filter on another field would make the embedded server scan the collection, so ``kind``,
``provider``, ``since`` and ``until`` are applied to the envelope of the records read, before
anything is decrypted. On MongoDB each window is an ordinary index range scan.

**Service tokens read one person per request.** Every record index starts with ``user`` (the
shard key): listing all people's records by update time would need a second index without it
(one more per write, and a scatter-gather across shards). A change notification names the person
(``records.changed``), and the service reads that person's records.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
)
from rest_framework import serializers, status
from rest_framework.exceptions import APIException, NotFound, PermissionDenied
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from ingestion.api import ErrorSerializer, _errors_text, api_exception_handler
from ingestion.authentication import HasTokenScope, ReadTokenAuthentication
from ingestion.events import PROVIDER as EVENTS_PROVIDER
from ingestion.ledger import service_read_record
from ingestion.models import ApiToken, ServiceToken
from ingestion.schemas import CATEGORY_COLLECTIONS, kinds_all
from ingestion.storage import record_decode, records_collection
from sibling.models import Person
from sibling.people import person_of
from sources.models import UserDataSource
from sources.providers import PROVIDERS, ProviderNotFound, get_provider

logger = logging.getLogger(__name__)

MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 100
# Work one request may do before it answers a short page with a ``next``.
MAX_QUERIES = 40
MAX_EXAMINED = 5000
# Windows of updated_at (milliseconds): the first, the smallest, and how fast they grow.
FIRST_WINDOW_MS = 60_000
MIN_WINDOW_MS = 1
MAX_WINDOW = timedelta(days=3650)
WINDOW_GROWTH = 8
# Records are listed from the person's sign-up (less this, for clocks of other hosts).
SIGN_UP_SLACK = timedelta(days=1)
MAX_ID = ObjectId("f" * 24)
MIN_ID = ObjectId("0" * 24)
CURSOR_MAX_LENGTH = 400

PERSON_TOKEN_OTHER_PERSON = "A personal token reads only its own person's records."  # noqa: S105
SERVICE_PERSON_REQUIRED = (
    "Required with a service token that is not restricted to one person: the person's public id."
)
SERVICE_OTHER_PERSON = "This token may not read that person's data."
SCOPE_MISSING = "This token may not read {category} records."
CURSOR_INVALID = "Not a cursor from this API; start again without one."
OUT_OF_RANGE = "Must be between the years 1 and 9999 in UTC."
OFFSET_REQUIRED = (
    "Must be RFC 3339 with a time zone offset, e.g. 2025-03-01T08:30:00Z (encode + as %2B)."
)


class Unavailable(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "Temporarily unavailable, please retry."
    default_code = "unavailable"


# --- Who is reading, and what ------------------------------------------------------------------


@dataclass(frozen=True)
class Reader:
    """What one request may read: one person's records of some categories."""

    user_id: Any
    public_id: str
    categories: tuple[str, ...]
    since_floor: datetime  # no record of the person is older (their sign-up, less the slack)
    service: ServiceToken | None = None


def _floor(user: Any) -> datetime:
    return user.date_joined - SIGN_UP_SLACK


def reader_resolve(request: Request, *, person: str | None, category: str | None) -> Reader:
    """The person and categories this request reads; ValidationError (400), PermissionDenied
    (403) or NotFound (404) otherwise. Another person's data is never reachable: a personal
    token is bound to its person, a restricted service token to its own."""
    token = request.auth
    if isinstance(token, ApiToken):
        own = person_of(request.user)
        if person and person != own.public_id:
            raise serializers.ValidationError({"person": [PERSON_TOKEN_OTHER_PERSON]})
        user, public_id, allowed = request.user, own.public_id, tuple(CATEGORY_COLLECTIONS)
    elif isinstance(token, ServiceToken):
        allowed = tuple(c for c in token.categories if c in CATEGORY_COLLECTIONS)
        if token.person_id is not None:
            if person and person != token.person.public_id:
                raise PermissionDenied(SERVICE_OTHER_PERSON)
            found = token.person
        else:
            if not person:
                raise serializers.ValidationError({"person": [SERVICE_PERSON_REQUIRED]})
            found = Person.objects.filter(public_id=person).first()
            if found is None:
                raise NotFound("No such person.")
        user = get_user_model().objects.filter(pk=found.user_id).first()
        if user is None:
            raise NotFound("No such person.")
        public_id = found.public_id
    else:  # pragma: no cover - the permission classes let no other caller in
        raise PermissionDenied()
    if category:
        if category not in allowed:
            raise PermissionDenied(SCOPE_MISSING.format(category=category))
        allowed = (category,)
    return Reader(
        user_id=user.pk,
        public_id=public_id,
        categories=allowed,
        since_floor=_floor(user),
        service=token if isinstance(token, ServiceToken) else None,
    )


def ledger_count(reader: Reader, counts: dict[str, int]) -> None:
    """A service's read goes in the person's ledger before it is answered (503 if it cannot)."""
    if reader.service is None or not any(counts.values()):
        return
    try:
        service_read_record(subject_id=reader.user_id, service=reader.service, counts=counts)
    except Exception as err:  # a read that cannot be recorded is not answered
        logger.exception("a service read could not be written to the access ledger")
        raise Unavailable() from err


# --- The cursor ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Position:
    """A place in the (updated_at, _id) order: a page lists what comes after it (or before it,
    ``reverse``). ``window_ms`` is the window size that suited the records around it and
    ``horizon`` the pass's end."""

    at: datetime
    id: ObjectId
    reverse: bool
    window_ms: int
    horizon: datetime

    def encode(self) -> str:
        payload = {
            "t": _ms(self.at),
            "i": str(self.id),
            "r": int(self.reverse),
            "w": self.window_ms,
            "h": _ms(self.horizon),
        }
        raw = json.dumps(payload, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Position:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            payload = json.loads(raw)
            return cls(
                at=_from_ms(int(payload["t"])),
                id=ObjectId(payload["i"]),
                reverse=bool(payload["r"]),
                window_ms=max(MIN_WINDOW_MS, min(int(payload["w"]), 2**45)),
                horizon=_from_ms(int(payload["h"])),
            )
        except (ValueError, TypeError, KeyError, InvalidId, binascii.Error, OverflowError):
            raise serializers.ValidationError({"cursor": [CURSOR_INVALID]}) from None


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _ms(value: datetime) -> int:
    # Exact integer arithmetic: a float timestamp can land a millisecond short, and the cursor
    # must name the very time MongoDB stored.
    return (_utc(value) - EPOCH) // timedelta(milliseconds=1)


def _from_ms(value: int) -> datetime:
    if not 0 <= value < 253402300800000:  # datetime's range, year 9999
        raise ValueError("out of range")
    return EPOCH + timedelta(milliseconds=value)


def _key(document: dict[str, Any]) -> tuple[datetime, ObjectId]:
    return _utc(document["updated_at"]), document["_id"]


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


# --- Paging ---------------------------------------------------------------------------------------


@dataclass
class RecordFilter:
    """What the envelope of a record must say to be listed (checked before decrypting)."""

    kind: str | None = None
    provider: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def admits(self, document: dict[str, Any]) -> bool:
        if self.kind and document.get("kind") != self.kind:
            return False
        if self.provider and document.get("provider") != self.provider:
            return False
        occurred = document.get("occurred_at")
        if self.since or self.until:
            if occurred is None:
                return False
            occurred = _utc(occurred)
            if self.since and occurred < self.since:
                return False
            if self.until and occurred > self.until:
                return False
        return True


@dataclass
class Page:
    documents: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    next: Position | None = None
    previous: Position | None = None


class _Scan:
    """One request's walk through a person's records in (updated_at, _id) order, forward from
    a position or backward (``reverse``) from it, in bounded windows (see the module's doc)."""

    def __init__(
        self,
        *,
        reader: Reader,
        match: RecordFilter,
        page_size: int,
        reverse: bool,
        horizon: datetime,
        lower: datetime,
    ) -> None:
        self.reader = reader
        self.match = match
        self.page_size = page_size
        self.reverse = reverse
        self.horizon = horizon
        self.lower = lower
        self.queries = 0
        self.examined = 0
        self.found: list[tuple[str, dict[str, Any]]] = []

    def _find(
        self, filter_: dict[str, Any]
    ) -> tuple[list[tuple[str, dict[str, Any]]], tuple[datetime, ObjectId] | None]:
        """Every chosen collection's records in the range, merged in order; at most the budget
        left from each. Returns them and, when a collection had more than that, the position
        up to which the merge is complete (its last record: what follows is unread)."""
        direction = -1 if self.reverse else 1
        limit = max(1, MAX_EXAMINED - self.examined)
        merged: list[tuple[str, dict[str, Any]]] = []
        truncated_at: tuple[datetime, ObjectId] | None = None
        for category in self.reader.categories:
            self.queries += 1
            documents = list(
                records_collection(CATEGORY_COLLECTIONS[category])
                .find({"user": self.reader.user_id, **filter_})
                .sort([("updated_at", direction), ("_id", direction)])
                .limit(limit)
            )
            if len(documents) == limit:
                # Only what precedes this collection's last record is complete in the merge.
                last = _key(documents[-1])
                if truncated_at is None or (
                    last > truncated_at if self.reverse else last < truncated_at
                ):
                    truncated_at = last
            merged += [(category, document) for document in documents]
        merged.sort(key=lambda item: _key(item[1]), reverse=self.reverse)
        if truncated_at is not None:
            cut = truncated_at
            merged = [
                item
                for item in merged
                if (_key(item[1]) >= cut if self.reverse else _key(item[1]) <= cut)
            ]
        return merged, truncated_at

    def _take(self, merged: list[tuple[str, dict[str, Any]]]) -> tuple[datetime, ObjectId] | None:
        """Walk the records in order; the position of the last one taken when the page filled
        (None when every record was walked)."""
        for category, document in merged:
            self.examined += 1
            if self.match.admits(document):
                self.found.append((category, document))
                if len(self.found) == self.page_size:
                    return _key(document)
        return None

    def run(self, at: datetime, after: ObjectId, window_ms: int) -> tuple[Position | None, int]:
        """Collect a page from the position (at, after), exclusive. Returns where to go on from
        (None: the end was reached) and the window size to go on with."""
        window = min(timedelta(milliseconds=window_ms), MAX_WINDOW)
        # Records stamped with the position's own time that come after its id (none after a
        # window's far edge: the highest id going forward, the lowest going back).
        if after != (MIN_ID if self.reverse else MAX_ID):
            op = "$lt" if self.reverse else "$gt"
            merged, truncated_at = self._find({"updated_at": at, "_id": {op: after}})
            stopped = self._take(merged) or truncated_at
            if stopped is not None:
                # All at one time: the next window starts right after it, small.
                window = timedelta(milliseconds=MIN_WINDOW_MS)
                return self._position(*stopped, window), _window_ms(window)
        edge = at
        while True:
            if self.reverse:
                if edge <= self.lower:
                    return None, _window_ms(window)
                start = max(edge - window, self.lower)
                merged, truncated_at = self._find({"updated_at": {"$gte": start, "$lt": edge}})
            else:
                if edge >= self.horizon:
                    return None, _window_ms(window)
                end = min(edge + window, self.horizon)
                merged, truncated_at = self._find({"updated_at": {"$gt": edge, "$lte": end}})
            stopped = self._take(merged) or truncated_at
            if stopped is not None:
                # Stopped inside the window: the records were denser than it assumed. The next
                # window spans twice what this one's records up to the stop did.
                span = abs(stopped[0] - edge)
                window = max(min(2 * span, window), timedelta(milliseconds=MIN_WINDOW_MS))
                return self._position(*stopped, window), _window_ms(window)
            edge, bound_id = (start, MIN_ID) if self.reverse else (end, MAX_ID)
            if not merged:
                window = min(window * WINDOW_GROWTH, MAX_WINDOW)
            elif len(merged) < self.page_size - len(self.found):
                window = min(window * 2, MAX_WINDOW)
            if self.queries >= MAX_QUERIES or self.examined >= MAX_EXAMINED:
                return self._position(edge, bound_id, window), _window_ms(window)

    def _position(self, at: datetime, id_: ObjectId, window: timedelta) -> Position:
        return Position(
            at=at,
            id=id_,
            reverse=self.reverse,
            window_ms=_window_ms(window),
            horizon=self.horizon,
        )


def _window_ms(window: timedelta) -> int:
    return max(MIN_WINDOW_MS, int(window.total_seconds() * 1000))


def records_page(
    *,
    reader: Reader,
    match: RecordFilter,
    page_size: int,
    cursor: Position | None,
    changed_since: datetime | None,
) -> Page:
    """One page of the person's records in (updated_at, _id) order, with the positions of the
    next and previous pages (None at either end)."""
    settled = timezone.now() - timedelta(seconds=settings.SIBLING_RECORDS_API_SETTLE_S)
    lower = max(reader.since_floor, changed_since) if changed_since else reader.since_floor
    # Start just before ``lower`` (MongoDB keeps milliseconds): records stamped at it count.
    start_at = lower - timedelta(milliseconds=1)
    if cursor is None:
        horizon = settled
        at, after, reverse, window_ms = start_at, MAX_ID, False, FIRST_WINDOW_MS
    else:
        # A cursor cannot move the horizon past the settle margin, whatever it says.
        horizon = min(cursor.horizon, settled)
        at, after, reverse, window_ms = cursor.at, cursor.id, cursor.reverse, cursor.window_ms
    scan = _Scan(
        reader=reader,
        match=match,
        page_size=page_size,
        reverse=reverse,
        horizon=horizon,
        lower=lower,
    )
    stop, window_ms = scan.run(at, after, window_ms)
    found = scan.found
    page = Page()
    if reverse:
        found.reverse()  # a page always reads oldest first
    page.documents = found

    def position(document: dict[str, Any], backward: bool) -> Position:
        at_, id_ = _key(document)
        return Position(at=at_, id=id_, reverse=backward, window_ms=window_ms, horizon=horizon)

    if not reverse:
        page.next = stop
        if cursor is not None:
            page.previous = (
                position(found[0][1], True)
                if found
                else Position(at, after, True, window_ms, horizon)
            )
    else:
        page.previous = stop
        page.next = (
            position(found[-1][1], False)
            if found
            else Position(at, after, False, window_ms, horizon)
        )
    return page


def record_find(*, reader_categories: tuple[str, ...], record_id: str) -> tuple[str, dict] | None:
    """A record by id among the given categories' collections (one _id lookup each)."""
    try:
        oid = ObjectId(record_id)
    except (InvalidId, TypeError):
        return None
    for category in reader_categories:
        # _id alone: the embedded server scans for {_id, user} (the owner is checked after).
        document = records_collection(CATEGORY_COLLECTIONS[category]).find_one({"_id": oid})
        if document is not None:
            return category, document
    return None


# --- Serializers ----------------------------------------------------------------------------------


class UtcDateTimeField(serializers.DateTimeField):
    """Always UTC with microseconds ("2025-03-01T08:30:02.120000Z"): one width, so times
    compare as text too, whatever zone the request runs in."""

    def to_representation(self, value: datetime | None) -> str | None:
        if value is None:
            return None
        return _utc(value).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class RecordSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="The record's id (24 hexadecimal characters).")
    person = serializers.CharField(help_text="The person's public id (pseudonymous).")
    category = serializers.ChoiceField(choices=list(CATEGORY_COLLECTIONS))
    kind = serializers.CharField(help_text="e.g. transaction, sleep_session, mood_rating.")
    provider = serializers.CharField(help_text="Where it came from (a provider id).")
    connection = serializers.CharField(
        allow_null=True, help_text="The connection's id, or null (sent by Sibling's own apps)."
    )
    occurred_at = UtcDateTimeField(help_text="When it happened (UTC).")
    data = serializers.DictField(help_text="The kind's fields, decrypted.")
    schema_version = serializers.IntegerField()
    ingested_at = UtcDateTimeField(allow_null=True, help_text="First stored.")
    updated_at = UtcDateTimeField(help_text="Last written: the order of the list.")

    class Meta:
        ref_name = "Record"


class RecordPageSerializer(serializers.Serializer):
    next = serializers.URLField(allow_null=True, help_text="The next page, or null at the end.")
    previous = serializers.URLField(allow_null=True, help_text="The page before, or null.")
    results = RecordSerializer(many=True)

    class Meta:
        ref_name = "RecordPage"


class ConnectionSerializer(serializers.Serializer):
    id = serializers.CharField()
    person = serializers.CharField(help_text="The person's public id.")
    provider = serializers.CharField()
    provider_name = serializers.CharField()
    category = serializers.CharField()
    status = serializers.ChoiceField(choices=UserDataSource.Status.choices)
    last_success_at = UtcDateTimeField(allow_null=True)
    records_stored = serializers.IntegerField()
    sync_interval_s = serializers.IntegerField(help_text="Seconds between scheduled syncs.")
    next_sync_at = UtcDateTimeField(allow_null=True)
    backfill_progress = serializers.FloatField(
        allow_null=True, help_text="0 to 1 while the first sync backfills; null after."
    )
    created_at = UtcDateTimeField()

    class Meta:
        ref_name = "Connection"


class ConnectionListSerializer(serializers.Serializer):
    results = ConnectionSerializer(many=True)

    class Meta:
        ref_name = "ConnectionList"


def _record_out(reader: Reader, category: str, document: dict[str, Any]) -> dict[str, Any]:
    decoded = record_decode(document, owner_id=reader.user_id)
    connection = document.get("connection")
    ingested = document.get("ingested_at")
    return {
        "id": str(document["_id"]),
        "person": reader.public_id,
        "category": category,
        "kind": document.get("kind", ""),
        "provider": document.get("provider", ""),
        "connection": str(connection) if connection is not None else None,
        "occurred_at": _utc(document["occurred_at"]),
        "data": decoded["data"],
        "schema_version": document.get("schema_version", 1),
        "ingested_at": _utc(ingested) if ingested is not None else None,
        "updated_at": _utc(document["updated_at"]),
    }


# --- Query parameters ----------------------------------------------------------------------------


def _providers() -> list[str]:
    return sorted([*PROVIDERS, EVENTS_PROVIDER])


def _kinds() -> list[str]:
    return sorted(kind.name for kind in kinds_all())


class AwareDateTimeField(serializers.DateTimeField):
    """RFC 3339: a time zone offset is required (a naive time means nothing to a server)."""

    def to_internal_value(self, value: Any) -> datetime:
        if isinstance(value, str) and " " in value.strip():
            self.fail("invalid", format=OFFSET_REQUIRED)
        parsed = super().to_internal_value(value)
        try:
            return parsed.astimezone(UTC)
        except OverflowError:  # e.g. 0001-01-01T00:00:00+14:00 is before year 1 in UTC
            raise serializers.ValidationError(OUT_OF_RANGE) from None

    def enforce_timezone(self, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise serializers.ValidationError(OFFSET_REQUIRED)
        return value


class PersonParam(serializers.Serializer):
    person = serializers.CharField(required=False, max_length=36)


class RecordQuery(PersonParam):
    category = serializers.ChoiceField(choices=list(CATEGORY_COLLECTIONS), required=False)
    kind = serializers.CharField(required=False, max_length=40)
    provider = serializers.CharField(required=False, max_length=40)
    since = AwareDateTimeField(required=False)
    until = AwareDateTimeField(required=False)
    changed_since = AwareDateTimeField(required=False)
    page_size = serializers.IntegerField(
        required=False, min_value=1, max_value=MAX_PAGE_SIZE, default=DEFAULT_PAGE_SIZE
    )
    cursor = serializers.CharField(required=False, max_length=CURSOR_MAX_LENGTH)

    def validate_kind(self, value: str) -> str:
        if value not in _kinds():
            raise serializers.ValidationError("Not a known kind.")
        return value

    def validate_provider(self, value: str) -> str:
        if value not in _providers():
            raise serializers.ValidationError("Not a known provider.")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        since, until = attrs.get("since"), attrs.get("until")
        if since and until and until < since:
            raise serializers.ValidationError({"until": ["Must not be before since."]})
        return attrs


def _query(serializer_class: type[serializers.Serializer], request: Request) -> dict[str, Any]:
    # The last value of each parameter, as Django's QueryDict.get gives it.
    names = serializer_class().fields
    data = {name: request.query_params.get(name) for name in names if name in request.query_params}
    query = serializer_class(data=data)
    query.is_valid(raise_exception=True)
    return query.validated_data


# --- Views ----------------------------------------------------------------------------------------


class RecordsApiThrottle(SimpleRateThrottle):
    """Per token (a person's or a service's), in the shared cache: SIBLING_RECORDS_API_RATE in
    REST framework's form ("600/min"). Over it: 429 with Retry-After."""

    scope = "records"

    def get_rate(self) -> str:
        return settings.SIBLING_RECORDS_API_RATE

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        token = request.auth
        if token is None:
            return None
        kind = "service" if isinstance(token, ServiceToken) else "person"
        return self.cache_format % {"scope": self.scope, "ident": f"{kind}:{token.pk}"}


def _bad_request(detail: Any) -> Response:
    fields = detail if isinstance(detail, dict) else {"non_field_errors": detail}
    return Response(
        {"error": _errors_text(fields), "fields": fields}, status=status.HTTP_400_BAD_REQUEST
    )


class ReadApi(APIView):
    authentication_classes = [ReadTokenAuthentication]
    permission_classes = [IsAuthenticated, HasTokenScope]
    throttle_classes = [RecordsApiThrottle]
    renderer_classes = [JSONRenderer]
    required_scope = "records:read"
    service_allowed = True

    def get_exception_handler(self) -> Any:
        def handle(exc: Exception, context: dict[str, Any]) -> Response:
            if isinstance(exc, serializers.ValidationError):
                return _bad_request(exc.detail)
            return api_exception_handler(exc, context)

        return handle


ERRORS = {
    400: OpenApiResponse(ErrorSerializer, description="A bad parameter; `fields` names it."),
    401: OpenApiResponse(ErrorSerializer, description="No token, or a bad or revoked one."),
    403: OpenApiResponse(
        ErrorSerializer,
        description="The token lacks the scope (records:read, or read:<category>), or may not "
        "read this person.",
    ),
    404: OpenApiResponse(ErrorSerializer, description="No such person or record."),
    429: OpenApiResponse(ErrorSerializer, description="Too many requests; see Retry-After."),
    503: OpenApiResponse(ErrorSerializer, description="Temporarily unavailable; retry."),
}
PERSON_PARAMETER = OpenApiParameter(
    "person",
    OpenApiTypes.STR,
    description="Service tokens not restricted to one person: the person's public id "
    "(required). A personal token may give only its own.",
)
RECORD_EXAMPLE = {
    "id": "65f1c2d3e4a5b6c7d8e9f012",
    "person": "3f6c1f9e-2b7a-4c55-9a51-1b2f1e0c9d7a",
    "category": "volunteered",
    "kind": "mood_rating",
    "provider": "sibling_app",
    "connection": None,
    "occurred_at": "2025-03-01T08:30:00.000000Z",
    "data": {"rating": 4, "note": "slept well"},
    "schema_version": 1,
    "ingested_at": "2025-03-01T08:30:02.120000Z",
    "updated_at": "2025-03-01T08:30:02.120000Z",
}


class RecordsListApi(ReadApi):
    @extend_schema(
        operation_id="records_list",
        summary="List records",
        description=(
            "A person's records, oldest change first, ordered by (updated_at, id), decrypted. "
            f"At most {MAX_PAGE_SIZE} a page (page_size, default {DEFAULT_PAGE_SIZE}); follow "
            "`next` until it is null (a page may be short, even empty, with a `next`). A pass "
            "lists what was stored up to a few seconds before its first page "
            "(SIBLING_RECORDS_API_SETTLE_S): records being written meanwhile are in the next "
            "pass (`changed_since`), and none is listed twice unless it was written again."
        ),
        parameters=[
            OpenApiParameter(
                "category", OpenApiTypes.STR, enum=list(CATEGORY_COLLECTIONS), description=""
            ),
            OpenApiParameter("kind", OpenApiTypes.STR, description="A kind, e.g. transaction."),
            OpenApiParameter("provider", OpenApiTypes.STR, description="A provider id."),
            OpenApiParameter(
                "since", OpenApiTypes.DATETIME, description="occurred_at at or after (RFC 3339)."
            ),
            OpenApiParameter(
                "until", OpenApiTypes.DATETIME, description="occurred_at at or before (RFC 3339)."
            ),
            OpenApiParameter(
                "changed_since",
                OpenApiTypes.DATETIME,
                description="updated_at at or after (RFC 3339): the records stored or changed "
                "since then.",
            ),
            PERSON_PARAMETER,
            OpenApiParameter(
                "page_size",
                {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
                description=f"1 to {MAX_PAGE_SIZE} (default {DEFAULT_PAGE_SIZE}).",
            ),
            OpenApiParameter(
                "cursor", OpenApiTypes.STR, description="From a `next` or `previous` link."
            ),
        ],
        responses={200: RecordPageSerializer, **ERRORS},
        examples=[
            OpenApiExample(
                "A page",
                response_only=True,
                status_codes=["200"],
                value={
                    "next": "https://sibling.example/api/v1/records/?cursor=eyJ0Ijox...",
                    "previous": None,
                    "results": [RECORD_EXAMPLE],
                },
            ),
            OpenApiExample(
                "A bad filter",
                response_only=True,
                status_codes=["400"],
                value={
                    "error": 'category: "bank" is not a valid choice.',
                    "fields": {"category": ['"bank" is not a valid choice.']},
                },
            ),
        ],
        tags=["records"],
    )
    def get(self, request: Request) -> Response:
        query = _query(RecordQuery, request)
        cursor = Position.decode(query["cursor"]) if query.get("cursor") else None
        reader = reader_resolve(request, person=query.get("person"), category=query.get("category"))
        page = records_page(
            reader=reader,
            match=RecordFilter(
                kind=query.get("kind"),
                provider=query.get("provider"),
                since=query.get("since"),
                until=query.get("until"),
            ),
            page_size=query["page_size"],
            cursor=cursor,
            changed_since=query.get("changed_since"),
        )
        results = [_record_out(reader, category, document) for category, document in page.documents]
        counts: dict[str, int] = {}
        for category, _document in page.documents:
            counts[category] = counts.get(category, 0) + 1
        ledger_count(reader, counts)
        body = {
            "next": self._link(request, page.next),
            "previous": self._link(request, page.previous),
            "results": results,
        }
        return Response(RecordPageSerializer(body).data)

    @staticmethod
    def _link(request: Request, position: Position | None) -> str | None:
        if position is None:
            return None
        params = request.query_params.copy()
        params["cursor"] = position.encode()
        return request.build_absolute_uri(f"{request.path}?{params.urlencode()}")


class RecordDetailApi(ReadApi):
    @extend_schema(
        operation_id="records_retrieve",
        summary="One record",
        description="A record by id, decrypted; 404 for an id the token may not read.",
        parameters=[PERSON_PARAMETER],
        responses={200: RecordSerializer, **ERRORS},
        examples=[
            OpenApiExample(
                "A record", response_only=True, status_codes=["200"], value=RECORD_EXAMPLE
            )
        ],
        tags=["records"],
    )
    def get(self, request: Request, record_id: str) -> Response:
        query = _query(PersonParam, request)
        token = request.auth
        if isinstance(token, ServiceToken) and token.person_id is None and not query.get("person"):
            # Any person's record, within the token's categories: its owner is the record's.
            found = record_find(reader_categories=tuple(token.categories), record_id=record_id)
            if found is None:
                raise NotFound("No such record.")
            owner = Person.objects.filter(user_id=found[1].get("user")).first()
            if owner is None:
                raise NotFound("No such record.")
            reader = reader_resolve(request, person=owner.public_id, category=None)
        else:
            reader = reader_resolve(request, person=query.get("person"), category=None)
            found = record_find(reader_categories=reader.categories, record_id=record_id)
        # Another person's record looks exactly like a missing one.
        if found is None or found[1].get("user") != reader.user_id:
            raise NotFound("No such record.")
        category, document = found
        body = _record_out(reader, category, document)
        ledger_count(reader, {category: 1})
        return Response(RecordSerializer(body).data)


class ConnectionsListApi(ReadApi):
    @extend_schema(
        operation_id="connections_list",
        summary="List connections",
        description=(
            "The person's connections: status, last success, records stored, schedule and "
            "first-backfill progress. Never credentials, cursors or the account's label (an "
            "address or a bank's name is personal). A service token sees the connections of "
            "the categories it may read."
        ),
        parameters=[PERSON_PARAMETER],
        responses={200: ConnectionListSerializer, **ERRORS},
        tags=["connections"],
    )
    def get(self, request: Request) -> Response:
        query = _query(PersonParam, request)
        reader = reader_resolve(request, person=query.get("person"), category=None)
        results = []
        for connection in UserDataSource.objects.filter(user_id=reader.user_id).order_by(
            "created_at"
        ):
            try:
                provider = get_provider(connection.provider)
            except ProviderNotFound:
                continue
            if provider.category not in reader.categories:
                continue
            results.append(
                {
                    "id": str(connection.pk),
                    "person": reader.public_id,
                    "provider": connection.provider,
                    "provider_name": provider.name,
                    "category": provider.category,
                    "status": connection.status,
                    "last_success_at": connection.last_success_at,
                    "records_stored": connection.records_stored,
                    "sync_interval_s": connection.sync_interval,
                    "next_sync_at": connection.next_sync_at,
                    "backfill_progress": connection.backfill_progress,
                    "created_at": connection.created_at,
                }
            )
        ledger_count(reader, {"connections": len(results)})
        return Response(ConnectionListSerializer({"results": results}).data)
