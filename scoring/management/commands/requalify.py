from django.core.management.base import BaseCommand, CommandError

from nurturing.locks import LockHeld
from scoring import services


class Command(BaseCommand):
    help = (
        "Re-evaluate the disqualified leads against the active ruleset (the same job beat runs daily). "
        "Leads that now qualify become qualified, their timeline says why, and their owners "
        "(or the sales managers) get an email."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--dry-run", action="store_true",
            help="Only count what would move, in the database, and change nothing (no job, no events, no email).",
        )

    def handle(self, *args, dry_run, **options):
        try:
            result = services.requalify_run(dry_run=dry_run)
        except LockHeld as exc:
            raise CommandError("Requalification is already running; try again when it has finished.") from exc
        if result["ruleset"] is None:
            self.stdout.write("No active ruleset: nothing to requalify.")
            return
        self.stdout.write(f"Ruleset: {result['ruleset']}")
        if dry_run:
            self.stdout.write(f"Dry run: {result['candidates']} candidates; "
                              f"{result['qualified']} would become qualified. Nothing was changed.")
            for (old, new), count in sorted(result["status"].items()):
                self.stdout.write(f"  {old} -> {new}: {count}")
            for lead in result["samples"]:
                self.stdout.write(f"  would qualify: #{lead.pk} {lead}")
            return
        job = result["job"]
        self.stdout.write(f"Job #{job.pk} {job.get_status_display().lower()}: {result['candidates']} candidates, "
                          f"{result['qualified']} now qualified.")
        for user_id, count in sorted(result["notified"].items()):
            self.stdout.write(f"  email to user #{user_id}: {count} lead(s)")
