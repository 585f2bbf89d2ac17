from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from django.core.management.base import BaseCommand, CommandError, CommandParser

from ingestion.models import SyncRun
from ingestion.runner import connection_sync
from sources.models import UserDataSource
from sources.selectors import person_by_login

BAR = 30


class Command(BaseCommand):
    help = "Sync connections now: one by id, or a person's (optionally one provider's)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("connection_id", nargs="?")
        parser.add_argument("--user", help="username or email")
        parser.add_argument("--provider")

    def handle(self, *args: Any, **options: Any) -> None:
        connections = self._connections(options)
        if not connections:
            raise CommandError("no active connection matches")
        for connection in connections:
            self.stdout.write(f"{connection.provider} {connection.pk}:")
            run = connection_sync(
                connection.pk, trigger=SyncRun.Trigger.MANUAL, on_page=self._progress
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
