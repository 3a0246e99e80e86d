import json
import sys

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from scoring.rules_io import RulesFileError, ruleset_import
from scoring.services import ruleset_activate


class Command(BaseCommand):
    help = (
        "Create a draft ruleset from a rules file (as export_rules writes it), with the reasons it "
        "names that do not exist yet. Nothing is imported if any rule is wrong. "
        "--activate makes it the active ruleset and queues the rescoring of every lead."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", help="The rules file (JSON, UTF-8); - reads standard input.")
        parser.add_argument(
            "--activate", action="store_true",
            help="Activate the imported ruleset (the active one is archived) and queue the rescoring job.",
        )

    def handle(self, *args, path, activate, **options):
        try:
            if path == "-":
                text = sys.stdin.buffer.read().decode("utf-8-sig")
            else:
                with open(path, encoding="utf-8-sig") as handle:
                    text = handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"Cannot read {path}: {exc}") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CommandError(f"{path} is not valid JSON: {exc}") from exc
        try:
            with transaction.atomic():
                ruleset = ruleset_import(data)
                job = ruleset_activate(ruleset=ruleset) if activate else None
        except RulesFileError as exc:
            raise CommandError(f"{path}: {exc} Nothing was imported.") from exc
        ruleset.refresh_from_db()
        self.stdout.write(f"Imported {ruleset} (id {ruleset.pk}) with {ruleset.rules.count()} rules.")
        if job is not None:
            self.stdout.write(f"Activated: rescoring job #{job.pk} queued.")
        else:
            self.stdout.write("It is a draft: check its impact in the admin, then activate it "
                              "(or import again with --activate).")
