"""Thin Celery wrappers: each takes plain values and calls one service."""

from celery import shared_task
from django.utils.dateparse import parse_datetime

from . import services
from .locks import LockHeld


@shared_task(bind=True)
def record_heartbeat(self, name="worker"):
    services.heartbeat_record(name=name, hostname=self.request.hostname or "")


def _when(now):
    return parse_datetime(now) if now else None


@shared_task
def enroll_entrants(now=None):
    """Beat: enroll the leads that entered each active sequence's segment."""
    try:
        return services.enroll_all(now=_when(now))
    except LockHeld:
        return {"skipped": "another enrollment run holds the lock"}


@shared_task(bind=True)
def dispatch_due(self, now=None, batch_size=100, time_budget=50.0):
    """Beat (and nudges): send the due deliveries. ``now`` (ISO 8601) moves the clock, for
    tests and catch-up runs. Runs again at once when its time budget ran out with work left."""
    from .dispatch import dispatch_due as dispatch

    result = dispatch(now=_when(now), batch_size=batch_size, time_budget=time_budget)
    if result.more:
        self.apply_async(kwargs={"now": now, "batch_size": batch_size, "time_budget": time_budget},
                         queue=self.request.delivery_info.get("routing_key") if self.request.delivery_info else None)
    return result.as_dict()


@shared_task
def sweep_stale_claims(older_than_seconds=None):
    """Beat: stale claims back to pending; stale sends to uncertain."""
    from datetime import timedelta

    kwargs = {} if older_than_seconds is None else {"older_than": timedelta(seconds=older_than_seconds)}
    return services.deliveries_sweep_stale(**kwargs)


@shared_task
def noop(index=0):
    """Does nothing: the baseline of bench/dispatch.py."""
    return index
