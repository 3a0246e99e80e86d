"""Thin Celery wrappers around scoring services."""

import logging

from celery import shared_task

from . import notifications, services

logger = logging.getLogger(__name__)


@shared_task(bind=True)
def run_rescore_job(self, job_id):
    services.rescore_job_run(job_id=job_id, worker=self.request.hostname or "")


@shared_task(bind=True)
def requalify(self):
    """Beat, daily: requalification, in this worker, under its lock."""
    from nurturing.locks import LockHeld

    try:
        result = services.requalify_run(worker=self.request.hostname or "")
    except LockHeld:
        logger.info("Requalification is already running; this run exits")
        return "already running"
    job = result["job"]
    return {"job": job.pk if job else None, "qualified": result["qualified"]}


@shared_task(bind=True)
def requalify_catch_up(self):
    """Beat, every 10 minutes: run the daily requalification late if its message was lost."""
    from nurturing.locks import LockHeld

    try:
        result = services.requalify_run(worker=self.request.hostname or "", only_if_overdue=True)
    except LockHeld:
        return "already running"
    if result.get("skipped"):
        return "not due"
    job = result["job"]
    return {"job": job.pk if job else None, "qualified": result["qualified"]}


@shared_task
def sweep_rescore_jobs():
    """Beat, every minute: enqueue pending jobs nobody took, resume jobs whose worker died."""
    return services.rescore_jobs_sweep()


# Sending is retried only when the mail server could not be reached (OSError covers
# SMTPException and connection errors), with backoff.
@shared_task(autoretry_for=(OSError,), retry_backoff=30, retry_backoff_max=1800, max_retries=6)
def send_requalified_leads_email(user_id, event_ids):
    notifications.requalified_leads_send(user_id=user_id, event_ids=event_ids)
