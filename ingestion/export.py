"""A person's data as a ZIP of JSON Lines files, produced as a stream of bytes.

The archive is written by ``zipfile`` into a sink that cannot seek: zipfile then writes each
member's sizes and checksum in a data descriptor after its data, so nothing has to be rewritten
and every byte can be handed on as soon as it is compressed. Records are read with cursors in
batches and written one line at a time; neither the archive nor any member is ever held whole in
memory, however many records a person has.

Connection credentials are never read: the connection query defers them.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable, Iterable, Iterator
from datetime import date, datetime
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

Every .jsonl file holds one JSON object per line. Dates and times are ISO 8601 in UTC;
identifiers are strings.

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
    return f"sibling-export-{(today or timezone.now().date()):%Y%m%d}.zip"


def export_stream(*, user: AbstractBaseUser) -> Iterator[bytes]:
    """The person's data as ZIP bytes, chunk by chunk (see the module's docstring)."""
    sink = _Sink()
    ledger = _ledger_model()
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
            with archive.open(_member_info(name), mode="w", force_zip64=True) as member:
                for row in rows():
                    member.write(_json_line(row))
                    if sink.size >= CHUNK_BYTES:
                        yield sink.take()
            yield sink.take()
        with archive.open(_member_info("README.txt"), mode="w") as member:
            member.write(_readme(ledger is not None).encode())
    # Closing the archive wrote its central directory.
    yield sink.take()


def _member_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=timezone.now().timetuple()[:6])
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


def _readme(with_ledger: bool) -> str:
    record_files = "".join(
        f"{collection}.jsonl\n    {RECORD_FILE_HELP.get(collection, 'Records of this category.')}"
        "\n    Each line is one record, its fields (decrypted) under data.\n"
        for collection in _record_collections()
    )
    return README.format(
        exported_at=timezone.now().strftime("%Y-%m-%d %H:%M UTC"),
        record_files=record_files,
        ledger_file=LEDGER_HELP if with_ledger else "",
    )


def _json_line(row: dict[str, Any]) -> bytes:
    return (json.dumps(row, default=_json_default, ensure_ascii=False) + "\n").encode()


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
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
