from django.core.management.base import BaseCommand

from leads import services


class Command(BaseCommand):
    help = "Process again the form submissions that failed or were never processed."

    def add_arguments(self, parser):
        parser.add_argument("--stuck-after", type=int, default=0,
                            help="Seconds after which a pending submission counts as stuck (default 0).")
        parser.add_argument("--max-attempts", type=int, default=5)
        parser.add_argument("--limit", type=int, default=100000)
        parser.add_argument("--include-invalid", action="store_true",
                            help="Also re-validate invalid ones (after a form's fields changed).")

    def handle(self, *args, stuck_after, max_attempts, limit, include_invalid, **options):
        counts = services.submissions_replay(
            stuck_after_seconds=stuck_after, max_attempts=max_attempts, limit=limit, include_invalid=include_invalid,
        )
        if not counts:
            self.stdout.write("Nothing to replay.")
        for status, count in sorted(counts.items()):
            self.stdout.write(f"{status}: {count}")
