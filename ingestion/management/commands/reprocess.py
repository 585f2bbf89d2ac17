from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Q

from ingestion.models import QuarantinedItem, RawPage
from ingestion.storage import StoreCounts, page_store
from sources.providers import ProviderNotFound, get_provider


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
            user = (
                get_user_model()
                .objects.filter(Q(username=options["user"]) | Q(email=options["user"]))
                .first()
            )
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
        for page in pages.order_by("fetched_at").iterator(chunk_size=50):
            processed = processor(page.stream, page.payload)
            totals += page_store(
                connection=page.connection,
                stream=page.stream,
                processed=processed,
                raw_page_id=page.pk,
            )
            replayed += 1
        self.stdout.write(
            f"{replayed} pages replayed: {totals.created} created, {totals.updated} updated, "
            f"{totals.deleted} deleted, {totals.quarantined} quarantined"
        )
