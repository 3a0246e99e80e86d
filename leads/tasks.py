"""Thin Celery wrappers around lead services."""

from celery import shared_task

from . import services


@shared_task
def replay_submissions():
    """Beat sweep: submissions stored but not processed are found in the database."""
    return services.submissions_replay(stuck_after_seconds=300)


@shared_task(bind=True)
def run_import_job(self, job_id, take_over_stalled=False):
    """An import uploaded in admin: the worker claims the job and imports the file."""
    from . import importer

    importer.import_job_run(job_id=job_id, worker=self.request.hostname or "", take_over_stalled=take_over_stalled)


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
