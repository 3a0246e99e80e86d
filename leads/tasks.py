"""Thin Celery wrappers around lead services."""

from celery import shared_task

from . import services


@shared_task
def replay_submissions():
    """Beat sweep: submissions stored but not processed are found in the database."""
    return services.submissions_replay(stuck_after_seconds=300)


@shared_task(bind=True)
def run_import_job(self, job_id, take_over_stalled=False):
    """An import uploaded in admin: the worker claims the job and imports the file,
    cleaning the rows in its own process (``workers=0``): a prefork pool's child may not
    start processes, and the pool is where a worker's concurrency is set."""
    from . import importer

    importer.import_job_run(job_id=job_id, worker=self.request.hostname or "", take_over_stalled=take_over_stalled,
                            workers=0)


@shared_task
def sweep_import_jobs():
    """Beat, every minute: import jobs nobody took, or whose worker died, are found in the database."""
    from . import importer

    return importer.import_jobs_sweep()


@shared_task
def send_assigned_leads_email(user_id, lead_ids):
    """Tell a rep which leads the assignment rules just gave them."""
    from . import assignment

    return assignment.assigned_leads_send(user_id=user_id, lead_ids=lead_ids)


@shared_task
def purge_stale(older_than_days=730):
    """Beat (disabled by default): the retention purge of ``manage.py purge_stale --apply``."""
    from . import privacy

    return privacy.leads_purge_stale(older_than_days=older_than_days, apply=True, via="beat")


@shared_task(bind=True, max_retries=None)
def deliver_webhook(self, delivery_id):
    """Attempt one webhook delivery; a failed attempt is retried after the backoff the
    delivery row records (the beat sweep also finds it, should this message be lost)."""
    from django.utils import timezone

    from . import webhooks
    from .models import WebhookDelivery

    status = webhooks.webhook_deliver(delivery_id=delivery_id)
    if status == WebhookDelivery.Status.PENDING:
        due = WebhookDelivery.objects.filter(pk=delivery_id).values_list("next_attempt_at", flat=True).first()
        if due is not None:
            countdown = max(1, int((due - timezone.now()).total_seconds()))
            raise self.retry(countdown=countdown)
    return status


@shared_task
def deliver_webhooks(delivery_ids):
    """Attempt a batch of webhook deliveries written together (the leads a rescoring chunk
    moved), one after the other. A failed attempt waits for its backoff in the row; the
    beat sweep retries it when due."""
    from . import webhooks

    return [webhooks.webhook_deliver(delivery_id=pk) for pk in delivery_ids]


@shared_task
def sweep_webhooks():
    """Beat: deliveries whose message was lost or whose retry is due."""
    from . import webhooks

    return webhooks.webhook_deliveries_sweep()


@shared_task
def refresh_rule_matches():
    """Beat: which rules each new or changed lead matches, for the dashboard."""
    from . import reports

    return reports.rule_matches_refresh()
