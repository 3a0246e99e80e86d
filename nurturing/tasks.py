"""Thin Celery wrappers: each takes plain values and calls one service."""

from celery import shared_task

from . import services


@shared_task(bind=True)
def record_heartbeat(self, name="worker"):
    services.heartbeat_record(name=name, hostname=self.request.hostname or "")
