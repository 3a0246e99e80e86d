import json

from django.core.management.base import BaseCommand, CommandError

from scoring.models import Ruleset
from scoring.rules_io import ruleset_export


class Command(BaseCommand):
    help = (
        "Write a ruleset as a rules file (JSON, UTF-8) to standard output: "
        "manage.py export_rules [--ruleset NAME] > rules.json. Without --ruleset, the active one."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--ruleset", metavar="NAME",
            help="The ruleset's name: its active version if it is active, else its latest version.",
        )

    def handle(self, *args, ruleset=None, **options):
        if ruleset is None:
            found = Ruleset.objects.filter(state=Ruleset.State.ACTIVE).first()
            if found is None:
                raise CommandError("There is no active ruleset; name one with --ruleset NAME.")
        else:
            found = (Ruleset.objects.filter(name=ruleset, state=Ruleset.State.ACTIVE).first()
                     or Ruleset.objects.filter(name=ruleset).order_by("-version", "-id").first())
            if found is None:
                names = sorted(set(Ruleset.objects.values_list("name", flat=True)))
                raise CommandError(f"No ruleset is named {ruleset!r}. Rulesets: {', '.join(names) or 'none'}.")
        text = json.dumps(ruleset_export(found), ensure_ascii=False, indent=2) + "\n"
        out = self.stdout
        encoding = (getattr(out, "encoding", None) or "").lower().replace("-", "").replace("_", "")
        if hasattr(out, "buffer") and encoding != "utf8":
            # Whatever the terminal's locale, the file is UTF-8.
            out.flush()
            out.buffer.write(text.encode("utf-8"))
            out.buffer.flush()
        else:
            out.write(text, ending="")
