"""The daily requalification runs late when its beat message was lost: the catch-up
reads the schedule (editable in admin) and the last run from the database."""

import datetime
import zoneinfo

import pytest
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from scoring import services, tasks
from scoring.models import RescoreJob

from .factories import pallet_ruleset

pytestmark = pytest.mark.django_db

SAO_PAULO = zoneinfo.ZoneInfo("America/Sao_Paulo")


def at(day, hour, minute=0):
    return datetime.datetime(2026, 11, day, hour, minute, tzinfo=SAO_PAULO)


@pytest.fixture
def daily_at_six():
    schedule = CrontabSchedule.objects.create(minute="0", hour="6", timezone=SAO_PAULO)
    return PeriodicTask.objects.create(name="requalify", task=services.REQUALIFY_TASK, crontab=schedule)


def last_run(when):
    job = RescoreJob.objects.create(ruleset=pallet_ruleset(), kind=RescoreJob.Kind.REQUALIFICATION,
                                    status=RescoreJob.Status.DONE)
    RescoreJob.objects.filter(pk=job.pk).update(created_at=when, finished_at=when)


def test_overdue_once_the_slot_has_passed_without_a_run(daily_at_six):
    last_run(at(10, 6, 1))
    assert not services.requalification_overdue(now=at(11, 5, 59))
    assert services.requalification_overdue(now=at(11, 6, 10))


def test_not_overdue_when_the_slot_was_run(daily_at_six):
    last_run(at(11, 6, 0))
    assert not services.requalification_overdue(now=at(11, 9, 0))


def test_a_disabled_or_missing_schedule_is_never_overdue(daily_at_six):
    last_run(at(1, 6, 0))
    PeriodicTask.objects.filter(pk=daily_at_six.pk).update(enabled=False)
    assert not services.requalification_overdue(now=at(11, 9, 0))
    PeriodicTask.objects.all().delete()
    assert not services.requalification_overdue(now=at(11, 9, 0))


def test_the_catch_up_runs_a_missed_requalification_once(daily_at_six):
    ruleset = pallet_ruleset()
    services.rescore_job_run(job_id=services.ruleset_activate(ruleset=ruleset).pk)
    last_run(datetime.datetime.now(SAO_PAULO) - datetime.timedelta(days=2))
    before = RescoreJob.objects.filter(kind=RescoreJob.Kind.REQUALIFICATION).count()

    first = tasks.requalify_catch_up.apply().get()
    second = tasks.requalify_catch_up.apply().get()

    assert isinstance(first, dict) and first["job"]
    assert second == "not due"
    assert RescoreJob.objects.filter(kind=RescoreJob.Kind.REQUALIFICATION).count() == before + 1


def test_no_new_requalification_starts_beside_an_unfinished_one(daily_at_six):
    """A requalification job left running by a dead worker (the sweep will resume it):
    a new run exits, as when another run holds the lock, instead of starting a second."""
    from nurturing.locks import LockHeld

    ruleset = pallet_ruleset()
    services.rescore_job_run(job_id=services.ruleset_activate(ruleset=ruleset).pk)
    RescoreJob.objects.create(ruleset=ruleset, kind=RescoreJob.Kind.REQUALIFICATION,
                              status=RescoreJob.Status.RUNNING)
    with pytest.raises(LockHeld):
        services.requalify_run()
    assert tasks.requalify.apply().get() == "already running"
    assert RescoreJob.objects.filter(kind=RescoreJob.Kind.REQUALIFICATION).count() == 1
