import time
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from django.core.management.base import BaseCommand, CommandError, CommandParser

from ingestion.models import SyncRun
from ingestion.runner import connection_sync
from ingestion.scheduler import connection_claim, connection_lease_holder
from sources.models import UserDataSource
from sources.selectors import person_by_login

BAR = 30
WAIT_POLL_S = 2.0


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
            run = connection_sync(
                connection.pk,
                trigger=SyncRun.Trigger.MANUAL,
                lease_owner=owner,
                on_page=self._progress,
            )
            if run is None:
                self.stdout.write("  skipped (not active)")
                continue
            self.stdout.write(
                f"\n  {run.outcome}: {run.fetched} fetched, {run.created} created, "
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
        if progress is None:
            line = f"  {stream}: page {run.pages}"
        else:
            filled = int(BAR * progress)
            line = f"  {stream}: [{'#' * filled}{'.' * (BAR - filled)}] {progress:4.0%}"
        self.stdout.write(f"\r{line:<60}", ending="")
        self.stdout.flush()

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
