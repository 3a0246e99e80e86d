import json

from django.core.management.base import BaseCommand, CommandError
from django.core.serializers.json import DjangoJSONEncoder

from leads import privacy


class Command(BaseCommand):
    help = "Print (or write) a JSON export of everything Funil holds about the person with this email."

    def add_arguments(self, parser):
        parser.add_argument("email")
        parser.add_argument("--output", "-o", help="write to this file instead of standard output")

    def handle(self, *args, email, output=None, **options):
        lead = privacy.find_lead_by_email(email)
        if lead is None:
            raise CommandError("No lead has this email.")
        data = privacy.lead_export(lead=lead, via="command")
        text = json.dumps(data, cls=DjangoJSONEncoder, ensure_ascii=False, indent=2)
        if output:
            with open(output, "w", encoding="utf-8") as handle:
                handle.write(text + "\n")
            self.stderr.write(f"Lead {lead.pk} exported to {output}")
        else:
            self.stdout.write(text)
