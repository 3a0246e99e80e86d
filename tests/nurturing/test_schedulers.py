"""Beat schedules are seeded from CELERY_BEAT_SCHEDULE and then belong to admin."""

import pytest
from django_celery_beat.models import CrontabSchedule, PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler

from config.celery import app
from nurturing.schedulers import EditableDatabaseScheduler

# The scheduler commits and checks its connection as beat does: no test transaction.
pytestmark = pytest.mark.django_db(transaction=True)


def edit_requalify_to_half_past_seven():
    task = PeriodicTask.objects.get(name="requalify")
    task.crontab = CrontabSchedule.objects.create(minute="30", hour="7", timezone=task.crontab.timezone)
    task.save()


def requalify_at():
    crontab = PeriodicTask.objects.get(name="requalify").crontab
    return crontab.hour, crontab.minute, str(crontab.timezone)


def test_code_defaults_create_the_entries_daily_requalification_at_six_in_sao_paulo():
    EditableDatabaseScheduler(app=app)
    names = set(PeriodicTask.objects.values_list("name", flat=True))
    assert {"requalify", "sweep-rescore-jobs", "worker-heartbeat", "replay-submissions"} <= names
    assert requalify_at() == ("6", "0", "America/Sao_Paulo")
    assert PeriodicTask.objects.get(name="sweep-rescore-jobs").interval.every == 60


def test_a_schedule_edited_in_admin_survives_a_beat_restart():
    EditableDatabaseScheduler(app=app)
    edit_requalify_to_half_past_seven()
    PeriodicTask.objects.filter(name="sweep-rescore-jobs").update(enabled=False)
    PeriodicTask.objects.filter(name="worker-heartbeat").delete()

    EditableDatabaseScheduler(app=app)  # beat starts again

    assert requalify_at() == ("7", "30", "America/Sao_Paulo")
    assert PeriodicTask.objects.get(name="sweep-rescore-jobs").enabled is False
    assert PeriodicTask.objects.filter(name="worker-heartbeat").exists()  # a missing entry comes back


def test_the_stock_database_scheduler_would_overwrite_the_edit():
    """Why nurturing.schedulers exists; if this fails, upstream changed and the subclass may go."""
    EditableDatabaseScheduler(app=app)
    edit_requalify_to_half_past_seven()
    DatabaseScheduler(app=app)
    assert requalify_at() == ("6", "0", "America/Sao_Paulo")


def test_beat_uses_the_editable_scheduler():
    assert app.conf.beat_scheduler == "nurturing.schedulers:EditableDatabaseScheduler"
