import time
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from ingestion.models import SyncRun
from ingestion.runner import connection_sync
from ingestion.scheduler import connection_claim, connection_lease_holder
from sources.models import UserDataSource
from sources.selectors import person_by_login

WAIT_POLL_S = 2.0
# A stream whose client tells how far through its backfill it is gets a bar; one that cannot
# tell gets a page count.
BAR_FORMAT = "  {desc}: [{bar:30}] {percentage:3.0f}%"
COUNT_FORMAT = "  {desc}: page {n}"


class Command(BaseCommand):
    help = (
        "Sync connections now: one by id, or a person's (optionally one provider's). A connection "
        "that another sync holds is reported busy, or waited for with --wait."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("connection_id", nargs="?")
        parser.add_argument("--user", help="username or email")
        parser.add_argument("--provider")
        parser.add_argument(
            "--wait",
            action="store_true",
            help="wait for a sync that holds the connection to finish, then sync",
        )

    _bar: tqdm | None = None

    def handle(self, *args: Any, **options: Any) -> None:
        connections = self._connections(options)
        if not connections:
            raise CommandError("no active connection matches")
        busy = 0
        for connection in connections:
            self.stdout.write(f"{connection.provider} {connection.pk}:")
            owner = self._claim(connection, wait=options["wait"])
            if owner is None:
                busy += 1
            if not owner:
                continue
            # The same lease every other sync takes: the runner never runs beside another.
            try:
                run = connection_sync(
                    connection.pk,
                    trigger=SyncRun.Trigger.MANUAL,
                    lease_owner=owner,
                    on_page=self._progress,
                )
            finally:
                self._bar_close()
            if run is None:
                self.stdout.write("  skipped (not active)")
                continue
            self.stdout.write(
                f"  {run.outcome}: {run.fetched} fetched, {run.created} created, "
                f"{run.updated} updated, {run.deleted} deleted, {run.quarantined} quarantined, "
                f"{run.api_calls} API calls"
                + (f" ({run.error_message})" if run.error_message else "")
            )
        if busy:
            raise CommandError(
                f"{busy} connection(s) busy with another sync; run again, or use --wait"
            )

    def _claim(self, connection: UserDataSource, *, wait: bool) -> str | None:
        """The lease; None when another sync holds it (and we do not wait), "" when the
        connection stopped being active. Says which."""
        announced = False
        while True:
            owner = connection_claim(connection_id=connection.pk, due=False)
            if owner is not None:
                return owner
            if not self._active(connection):
                self.stdout.write("  skipped (not active)")
                return ""
            until = connection_lease_holder(connection_id=connection.pk)
            if until is None:
                continue  # released between the two reads: claim again
            if not wait:
                self.stdout.write(
                    "  busy: another sync of this connection is running "
                    f"(its lease runs until {until:%H:%M:%S} UTC); --wait waits for it"
                )
                return None
            if not announced:
                self.stdout.write("  waiting for the running sync to finish...")
                announced = True
            time.sleep(WAIT_POLL_S)

    @staticmethod
    def _active(connection: UserDataSource) -> bool:
        return UserDataSource.objects.filter(
            pk=connection.pk, status=UserDataSource.Status.ACTIVE
        ).exists()

    def _progress(self, run: SyncRun, stream: str, progress: float | None) -> None:
        """One page stored: the stream's bar moves (a new stream starts a new bar)."""
        bar = self._bar
        if bar is None or bar.desc != stream or (bar.total is None) != (progress is None):
            self._bar_close()
            bar = self._bar = tqdm(
                desc=stream,
                total=None if progress is None else 100,
                bar_format=COUNT_FORMAT if progress is None else BAR_FORMAT,
                ascii=".#",
                # The command's own stream (tests pass a StringIO), unwrapped: Django's wrapper
                # would end every redraw with a newline.
                file=self.stdout._out,
                leave=True,
            )
        if progress is None:
            bar.update(1)
        else:
            bar.update(max(0, round(progress * 100) - bar.n))

    def _bar_close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _connections(self, options: dict[str, Any]) -> list[UserDataSource]:
        queryset = UserDataSource.objects.filter(status=UserDataSource.Status.ACTIVE)
        if options["connection_id"]:
            try:
                return list(queryset.filter(pk=ObjectId(options["connection_id"])))
            except InvalidId:
                raise CommandError("not a connection id") from None
        if not options["user"]:
            raise CommandError("give a connection id, or --user (and optionally --provider)")
        user = person_by_login(options["user"])
        if user is None:
            raise CommandError("no such person")
        queryset = queryset.filter(user=user)
        if options["provider"]:
            queryset = queryset.filter(provider=options["provider"])
        return list(queryset)
