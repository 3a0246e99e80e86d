"""/healthz/: is the database reachable, the broker reachable, the worker alive?"""

from datetime import timedelta

from django.db import connection
from django.http import JsonResponse
from django.utils import timezone

from config.celery import app as celery_app
from nurturing.models import WorkerHeartbeat


def healthz(request):
    checks = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - a health check reports any failure
        checks["database"] = f"error: {exc.__class__.__name__}"
    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["broker"] = f"error: {exc.__class__.__name__}"
    worker = None
    if checks["database"] == "ok":
        worker = WorkerHeartbeat.objects.filter(name="worker").first()
    stale = worker is None or worker.last_seen < timezone.now() - timedelta(minutes=5)
    checks["worker"] = "unknown" if worker is None else ("stale" if stale else "ok")
    healthy = checks["database"] == "ok" and checks["broker"] == "ok"
    return JsonResponse(
        {"status": "ok" if healthy else "error", "checks": checks,
         "worker_last_seen": worker.last_seen.isoformat() if worker else None},
        status=200 if healthy else 503,
    )
