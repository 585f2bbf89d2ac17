from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ingestion.errors import PersonErased
from ingestion.models import QuarantinedItem, RawPage
from ingestion.storage import StoreCounts, page_store
from sources.providers import ProviderNotFound, get_provider
from sources.selectors import person_by_login


class Command(BaseCommand):
    help = (
        "Replay the kept raw pages of a provider through the current processors and storage, "
        "in the order they were fetched, without calling the provider."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--provider", required=True)
        parser.add_argument("--user", help="username or email; all people when omitted")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            provider = get_provider(options["provider"])
        except ProviderNotFound:
            raise CommandError(f"unknown provider {options['provider']}") from None
        pages = RawPage.objects.filter(provider=provider.id).select_related("connection")
        if options["user"]:
            user = person_by_login(options["user"])
            if user is None:
                raise CommandError("no such person")
            pages = pages.filter(user=user)
        processor = provider.processor()
        # Replaying reproduces the quarantine of the pages replayed: drop what they made before.
        oldest = pages.order_by("fetched_at").values_list("fetched_at", flat=True).first()
        if oldest is not None:
            stale = QuarantinedItem.objects.filter(provider=provider.id, created_at__gte=oldest)
            if options["user"]:
                stale = stale.filter(user=user)
            stale.delete()
        totals = StoreCounts()
        replayed = 0
        skipped = 0
        for page in pages.order_by("fetched_at").iterator(chunk_size=50):
            processed = processor(page.stream, page.payload)
            try:
                totals += page_store(
                    connection=page.connection,
                    stream=page.stream,
                    processed=processed,
                    raw_page_id=page.pk,
                )
            except PersonErased:
                skipped += 1  # the person is being erased: their pages go with them
                continue
            replayed += 1
        self.stdout.write(
            f"{replayed} pages replayed: {totals.created} created, {totals.updated} updated, "
            f"{totals.deleted} deleted, {totals.quarantined} quarantined"
            + (f"; {skipped} pages of people being erased skipped" if skipped else "")
        )
