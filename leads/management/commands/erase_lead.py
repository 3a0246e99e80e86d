from django.core.management.base import BaseCommand, CommandError

from leads import privacy


class Command(BaseCommand):
    help = ("Erase the personal data of the person with this email: anonymise the lead and its submissions, "
            "keep a keyed hash of the email on the suppression list, and audit it.")

    def add_arguments(self, parser):
        parser.add_argument("email")
        parser.add_argument("--note", default="", help="a request reference for the audit log (no personal data)")

    def handle(self, *args, email, note="", **options):
        lead = privacy.find_lead_by_email(email)
        if lead is None:
            # Still suppress: the person asked, and may come back.
            if privacy.suppression_add(email=email, reason="erased") is None:
                raise CommandError("Give an email address.")
            self.stdout.write("No lead has this email; the address was put on the suppression list.")
            return
        privacy.lead_erase(lead=lead, via="command", request_note=note)
        self.stdout.write(f"Lead {lead.pk} erased; its email is on the suppression list.")
