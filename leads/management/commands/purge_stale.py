from django.core.management.base import BaseCommand, CommandError

from leads import privacy


class Command(BaseCommand):
    help = ("Anonymise out-of-focus and disqualified leads with no activity for --older-than days. "
            "Dry run by default: prints how many; --apply does it.")

    def add_arguments(self, parser):
        parser.add_argument("--older-than", type=int, required=True, metavar="DAYS")
        parser.add_argument("--apply", action="store_true", help="anonymise them (default: only count)")

    def handle(self, *args, older_than, apply=False, **options):
        if older_than < 1:
            raise CommandError("--older-than must be at least 1 day.")
        count = privacy.leads_purge_stale(older_than_days=older_than, apply=apply)
        if apply:
            self.stdout.write(f"{count} stale leads anonymised.")
        else:
            self.stdout.write(f"{count} stale leads would be anonymised (dry run; add --apply).")
