import pytest
from django.utils import timezone

from nurturing import services
from nurturing.models import WorkerHeartbeat

pytestmark = pytest.mark.django_db


def test_health_reports_database_broker_and_an_unknown_worker(client):
    response = client.get("/healthz/")
    assert response.status_code == 200
    body = response.json()
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["broker"] == "ok"
    assert body["checks"]["worker"] == "unknown"


def test_health_says_the_worker_is_alive_after_a_heartbeat_and_stale_long_after(client):
    services.heartbeat_record(name="worker", hostname="celery@test")
    assert client.get("/healthz/").json()["checks"]["worker"] == "ok"
    WorkerHeartbeat.objects.filter(name="worker").update(last_seen=timezone.now() - timezone.timedelta(hours=1))
    assert client.get("/healthz/").json()["checks"]["worker"] == "stale"


def test_a_heartbeat_twice_only_moves_the_clock():
    services.heartbeat_record(name="worker")
    beat = services.heartbeat_record(name="worker")
    assert beat.beats == 2
    assert WorkerHeartbeat.objects.count() == 1
