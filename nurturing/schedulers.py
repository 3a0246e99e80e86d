"""The beat scheduler: schedules live in the database, editable in admin.

django-celery-beat's ``DatabaseScheduler`` writes ``CELERY_BEAT_SCHEDULE`` into the
database with ``update_or_create`` each time beat starts (``setup_schedule`` →
``update_from_dict`` → ``ModelEntry.from_entry``), so a schedule a marketer changed in
admin would silently come back to the code's default on the next restart. This one
only creates the entries that are missing; existing ones stay as they were edited.
"""

from django_celery_beat.models import PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler


class EditableDatabaseScheduler(DatabaseScheduler):
    def update_from_dict(self, mapping):
        existing = set(PeriodicTask.objects.filter(name__in=list(mapping)).values_list("name", flat=True))
        super().update_from_dict({name: entry for name, entry in mapping.items() if name not in existing})
