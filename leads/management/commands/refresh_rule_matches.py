from django.core.management.base import BaseCommand

from leads import reports


class Command(BaseCommand):
    help = ("Store which rules of the active ruleset each lead matches (for the dashboard's rule effectiveness), "
            "for leads never evaluated, evaluated for another ruleset, or changed since. Beat runs it every 10 min.")

    def add_arguments(self, parser):
        parser.add_argument("--chunk-size", type=int, default=20000)

    def handle(self, *args, chunk_size, **options):
        count = reports.rule_matches_refresh(chunk_size=chunk_size)
        self.stdout.write(f"{count} leads refreshed.")
