"""Run the nurturing jobs by hand: ``manage.py nurture enroll|dispatch|sweep``."""

import json

from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_datetime


class Command(BaseCommand):
    help = "Run a nurturing job now: enroll segment entrants, dispatch due emails, or sweep stale claims."

    def add_arguments(self, parser):
        parser.add_argument("job", choices=["enroll", "dispatch", "sweep"])
        parser.add_argument("--now", help="ISO 8601 moment to act as 'now' (enroll, dispatch).")

    def handle(self, *args, job, now=None, **options):
        from nurturing import services
        from nurturing.dispatch import dispatch_due
        from nurturing.locks import LockHeld

        when = None
        if now:
            when = parse_datetime(now)
            if when is None or when.tzinfo is None:
                raise CommandError("--now needs an ISO 8601 moment with its offset, e.g. 2026-12-07T10:00:00-03:00.")
        if job == "enroll":
            try:
                result = services.enroll_all(now=when)
            except LockHeld as error:
                raise CommandError("Another enrollment run holds the lock.") from error
        elif job == "dispatch":
            result = dispatch_due(now=when, time_budget=3600).as_dict()
        else:
            result = services.deliveries_sweep_stale()
        self.stdout.write(json.dumps(result, default=str))
