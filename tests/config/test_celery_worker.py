import time

import pytest

from nurturing.models import WorkerHeartbeat
from nurturing.tasks import record_heartbeat

pytestmark = pytest.mark.services


def test_a_real_worker_runs_an_enqueued_task_and_its_effect_reaches_the_database(celery_worker_process):
    assert not WorkerHeartbeat.objects.filter(name="from-the-test").exists()

    record_heartbeat.apply_async(kwargs={"name": "from-the-test"}, queue=celery_worker_process.queue)

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not WorkerHeartbeat.objects.filter(name="from-the-test").exists():
        time.sleep(0.2)
    beat = WorkerHeartbeat.objects.filter(name="from-the-test").first()
    assert beat is not None, f"the worker did not run the task; its log:\n{celery_worker_process.log()}"
    assert beat.beats == 1
    assert beat.hostname.startswith(celery_worker_process.queue)
