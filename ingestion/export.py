"""A person's data as a ZIP of JSON Lines files, produced as a stream of bytes.

The archive is written by ``zipfile`` into a sink that cannot seek: zipfile then writes each
member's sizes and checksum in a data descriptor after its data, so nothing has to be rewritten
and every byte can be handed on as soon as it is compressed. Records are read with cursors in
batches and written one line at a time; neither the archive nor any member is ever held whole in
memory, however many records a person has.

Connection credentials are never read: the connection query defers them.

Times are written in the person's time zone with their offset (``2026-03-29T08:15:00+02:00``),
not in UTC: that is the clock time the person lived, so the file reads without arithmetic, and
the offset keeps each one the exact instant for any program (ISO 8601 converts to UTC on its
own). The README names the zone, which an offset alone does not (it changes with daylight saving
time). Civil dates a source gives ("2026-03-29" for a day's steps) are left as they are: they are
already the person's own days.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, date, datetime, tzinfo
from functools import partial
from typing import Any
from uuid import UUID

from bson import Binary, ObjectId
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import models
from django.http import StreamingHttpResponse
from django.utils import timezone

from ingestion.models import SyncRun
from ingestion.schemas import CATEGORY_COLLECTIONS
from ingestion.storage import record_decode, records_collection
from sibling.fields import EncryptedField
from sibling.people import person_zone
from sources.models import UserDataSource

BATCH_SIZE = 500
# Compressed bytes are handed on once this much has gathered, so chunks are neither tiny nor big.
CHUNK_BYTES = 64 * 1024

CONNECTION_FIELDS = (
    "id",
    "provider",
    "status",
    "account_label",
    "sandbox",
    "granted_scopes",
    "sync_interval",
    "next_sync_at",
    "last_success_at",
    "last_error",
    "notice",
    "records_stored",
    "backfill_progress",
    "disconnected_at",
    "created_at",
    "updated_at",
)
SYNC_RUN_FIELDS = (
    "id",
    "connection_id",
    "provider",
    "trigger",
    "started_at",
    "ended_at",
    "outcome",
    "fetched",
    "created",
    "updated",
    "deleted",
    "quarantined",
    "api_calls",
    "rate_limited",
    "pages",
    "error_class",
    "error_message",
)
# "data" is read only from records of the earlier layout, not yet sealed (manage.py records_seal);
# record_decode gives every record its decrypted data.
RECORD_FIELDS = (
    "provider",
    "kind",
    "external_id",
    "connection",
    "occurred_at",
    "data",
    "sealed",
    "schema_version",
    "ingested_at",
    "updated_at",
)

README = """\
Your data at Sibling, exported {exported_at}.

Every .jsonl file holds one JSON object per line; identifiers are strings. Dates and times are
ISO 8601 in your time zone, {zone}, with their offset from UTC: 2026-03-29T08:15:00+02:00 is
08:15 on your clock and 06:15 UTC. A record's utc_offset_min, where a source gives one, is the
offset (in minutes) of where it happened, by that source's clock; activity_day and
sleep_session records of schema_version 1 (stored before) have it in seconds, as utc_offset_s.

connections.jsonl
    The accounts you connected: provider, status, the account's label, the permissions
    (scopes) granted, which data streams have been synced, and when. Passwords, tokens and
    keys are never exported.
{record_files}
sync_runs.jsonl
    Every time Sibling fetched data from one of your connections: when, what started it,
    how it ended and how many records it added, changed or removed.
{ledger_file}README.txt
    This file.
"""
RECORD_FILE_HELP = {
    "external_data": "Records from your accounts at other services (emails, bank transactions).",
    "behavioral_data": "Records of what you do (activity, sleep, heart rate, screen time).",
    "volunteered_data": "What you told Sibling yourself (mood ratings, notes, sleep logs).",
}
LEDGER_HELP = """\
ledger.jsonl
    Each time your decrypted data was viewed, exported or replayed, by whom (you or
    Sibling staff) and why.
"""


class _Sink:
    """A write-only, unseekable file for zipfile: collects bytes until they are taken."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self.size = 0

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        self.size = 0
        return data


def export_filename(*, today: date | None = None) -> str:
    """The archive's name, dated by the current time zone's day (the person's, in a request)."""
    return f"sibling-export-{(today or timezone.localdate()):%Y%m%d}.zip"


def export_stream(*, user: AbstractBaseUser) -> Iterator[bytes]:
    """The person's data as ZIP bytes, chunk by chunk (see the module's docstring)."""
    sink = _Sink()
    ledger = _ledger_model()
    zone = person_zone(user)
    line = partial(_json_line, zone=zone)
    with zipfile.ZipFile(sink, mode="w", compression=zipfile.ZIP_DEFLATED) as archive:
        members: list[tuple[str, Callable[[], Iterable[dict[str, Any]]]]] = [
            ("connections.jsonl", lambda: _connections(user)),
        ]
        for collection in _record_collections():
            members.append(
                (f"{collection}.jsonl", lambda collection=collection: _records(user, collection))
            )
        members.append(("sync_runs.jsonl", lambda: _sync_runs(user)))
        if ledger is not None:
            members.append(("ledger.jsonl", lambda: _ledger_entries(user, ledger)))
        for name, rows in members:
            # force_zip64: the size of a streamed member is unknown up front and may pass 4 GB.
            with archive.open(_member_info(name, zone), mode="w", force_zip64=True) as member:
                for row in rows():
                    member.write(line(row))
                    if sink.size >= CHUNK_BYTES:
                        yield sink.take()
            yield sink.take()
        with archive.open(_member_info("README.txt", zone), mode="w") as member:
            member.write(_readme(ledger is not None, zone).encode())
    # Closing the archive wrote its central directory.
    yield sink.take()


def _member_info(name: str, zone: tzinfo) -> zipfile.ZipInfo:
    # ZIP keeps a member's time as a wall-clock time without a zone: the person's.
    info = zipfile.ZipInfo(name, date_time=timezone.now().astimezone(zone).timetuple()[:6])
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def _record_collections() -> list[str]:
    # A registered category may share a collection; each collection is exported once.
    return list(dict.fromkeys(CATEGORY_COLLECTIONS.values()))


def _connections(user: AbstractBaseUser) -> Iterator[dict[str, Any]]:
    # only(): the credentials (and cursors, lease, lookup hash) are not even read.
    rows = (
        UserDataSource.objects.filter(user=user)
        .only(*CONNECTION_FIELDS, "user", "cursors")
        .order_by("created_at")
    )
    for connection in rows.iterator(chunk_size=BATCH_SIZE):
        row = {name: getattr(connection, name) for name in CONNECTION_FIELDS}
        # Which streams have been synced, without the cursors' values (provider state).
        row["synced_streams"] = sorted(connection.cursors or {})
        yield row


def _records(user: AbstractBaseUser, collection: str) -> Iterator[dict[str, Any]]:
    projection = dict.fromkeys(RECORD_FIELDS, 1)
    cursor = (
        records_collection(collection)
        .find(
            {"user": user.pk},
            projection,
            batch_size=BATCH_SIZE,
            # A slow download may leave the cursor idle for long; it is closed below instead.
            no_cursor_timeout=True,
        )
        .sort([("kind", 1), ("occurred_at", -1)])
    )
    with cursor:
        for document in cursor:
            record = record_decode(document, owner_id=user.pk)
            record.pop("sealed", None)
            record["id"] = record.pop("_id")
            yield record


def _sync_runs(user: AbstractBaseUser) -> Iterator[dict[str, Any]]:
    rows = SyncRun.objects.filter(user=user).order_by("started_at").values(*SYNC_RUN_FIELDS)
    yield from rows.iterator(chunk_size=BATCH_SIZE)


def _ledger_model() -> type[models.Model] | None:
    """The access ledger's model, when this deployment has it."""
    try:
        from ingestion.models import AccessLedgerEntry
    except ImportError:
        return None
    return AccessLedgerEntry


def _ledger_entries(user: AbstractBaseUser, model: type[models.Model]) -> Iterator[dict[str, Any]]:
    names = {f.name for f in model._meta.concrete_fields}
    owner = "subject" if "subject" in names else "user"
    fields = [
        f.attname
        for f in model._meta.concrete_fields
        # Whoever the entry is about is the person exporting; encrypted values stay out.
        if f.name != owner and not isinstance(f, EncryptedField)
    ]
    order = "created_at" if "created_at" in names else "pk"
    rows = model._default_manager.filter(**{owner: user}).order_by(order).values(*fields)
    yield from rows.iterator(chunk_size=BATCH_SIZE)


def _readme(with_ledger: bool, zone: tzinfo) -> str:
    record_files = "".join(
        f"{collection}.jsonl\n    {RECORD_FILE_HELP.get(collection, 'Records of this category.')}"
        "\n    Each line is one record, its fields (decrypted) under data.\n"
        for collection in _record_collections()
    )
    return README.format(
        exported_at=timezone.now().astimezone(zone).strftime("%Y-%m-%d %H:%M (UTC%z)"),
        zone=str(zone),
        record_files=record_files,
        ledger_file=LEDGER_HELP if with_ledger else "",
    )


def _json_line(row: dict[str, Any], *, zone: tzinfo = UTC) -> bytes:
    default = partial(_json_default, zone=zone)
    return (json.dumps(row, default=default, ensure_ascii=False) + "\n").encode()


def _json_default(value: Any, *, zone: tzinfo = UTC) -> Any:
    if isinstance(value, datetime):
        # Stored times are UTC; one without a zone is too (an older record's value).
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.astimezone(zone).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (ObjectId, UUID)):
        return str(value)
    if isinstance(value, Binary):
        # Nothing encrypted is left after decryption; any other binary is not for people.
        return None
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def export_response(*, user: AbstractBaseUser) -> StreamingHttpResponse:
    """The download of everything about the person, streamed as it is written."""
    response = StreamingHttpResponse(export_stream(user=user), content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="{export_filename()}"'
    # Personal data: no cache or proxy keeps a copy.
    response["Cache-Control"] = "no-store, private"
    return response
