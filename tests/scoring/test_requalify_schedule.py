"""Marketers set when the daily requalification runs, as days and a time, in admin."""

import datetime
import re

import pytest
from django_celery_beat.models import PeriodicTask

from scoring import services
from scoring.models import RequalificationSchedule

pytestmark = pytest.mark.django_db


@pytest.fixture
def marketer_client(client, marketer):
    client.force_login(marketer)
    return client


def test_a_marketer_sets_the_days_and_time_of_the_requalification(marketer_client):
    assert not PeriodicTask.objects.filter(task=services.REQUALIFY_TASK).exists()  # beat never ran
    response = marketer_client.get("/admin/scoring/requalificationschedule/")
    task = PeriodicTask.objects.get(task=services.REQUALIFY_TASK)  # created with the default: daily at 06:00
    assert response.status_code == 302 and response["Location"].endswith(f"/{task.pk}/change/")
    page = marketer_client.get(response["Location"]).content.decode()
    assert 'type="time" name="at" value="06:00"' in page
    checked = re.findall(r'name="days" value="([0-6])"[^>]*checked', page)
    assert sorted(checked) == ["0", "1", "2", "3", "4", "5", "6"]  # every day
    assert re.search(r'name="enabled"[^>]*checked', page)
    assert "America/Sao_Paulo" in page and "Every day at 06:00" in page

    response = marketer_client.post(response["Location"], {"enabled": "on", "days": ["1", "2", "3", "4", "5"],
                                                           "at": "07:30"})
    assert response.status_code == 302
    task.refresh_from_db()
    crontab = task.crontab
    assert (crontab.minute, crontab.hour, crontab.day_of_week, str(crontab.timezone)) == (
        "30", "7", "1,2,3,4,5", "America/Sao_Paulo")
    assert task.enabled and task.interval is None
    schedule = RequalificationSchedule.objects.get(pk=task.pk)
    assert schedule.days_and_time() == ({1, 2, 3, 4, 5}, datetime.time(7, 30))
    assert str(schedule) == "Monday, Tuesday, Wednesday, Thursday, Friday at 07:30"

    page = marketer_client.post(f"/admin/scoring/requalificationschedule/{task.pk}/change/",
                                {"enabled": "on", "at": "07:30"}).content.decode()
    assert "Choose at least one day." in page
    marketer_client.post(f"/admin/scoring/requalificationschedule/{task.pk}/change/", {"days": ["0"], "at": "07:30"})
    task.refresh_from_db()
    assert not task.enabled and task.crontab.day_of_week == "0"
    assert "Not scheduled." in marketer_client.get(
        f"/admin/scoring/requalificationschedule/{task.pk}/change/").content.decode()


def test_the_other_periodic_jobs_are_not_the_marketers(marketer_client):
    services.requalify_schedule()
    from django_celery_beat.models import IntervalSchedule

    every_minute = IntervalSchedule.objects.create(every=60, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(name="nurture-dispatch", task="nurturing.tasks.dispatch_due", interval=every_minute)
    assert marketer_client.get("/admin/django_celery_beat/periodictask/").status_code == 403
    index = marketer_client.get("/admin/").content.decode()
    assert "Requalification schedule" in index and "Periodic tasks" not in index
    # The list opens the requalification's own row, whatever else beat's table holds.
    response = marketer_client.get("/admin/scoring/requalificationschedule/")
    assert response["Location"].endswith(f"/{services.requalify_schedule().pk}/change/")


def test_the_catch_up_reads_the_schedule_the_marketer_set(settings):
    from django.utils import timezone

    task = services.requalify_schedule_set(days={1, 2, 3, 4, 5, 6, 0}, at=datetime.time(6, 0))
    PeriodicTask.objects.filter(pk=task.pk).update(date_changed=timezone.now() - datetime.timedelta(days=3))
    assert services.requalification_overdue()  # it owed a run since 06:00 and none happened
    services.requalify_schedule_set(days={1}, at=datetime.time(6, 0), enabled=False)
    assert not services.requalification_overdue()  # switched off: nothing owed
