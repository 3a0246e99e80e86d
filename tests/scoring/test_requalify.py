"""Requalification on schedule and by hand, its lock, its emails, and the sweep that
keeps rescoring jobs moving when a worker is lost."""

from decimal import Decimal
from io import StringIO

import pytest
from django.core import mail
from django.core.management import CommandError, call_command
from django.utils import timezone

from leads import services as lead_services
from leads.models import Lead, LeadEvent, LeadStatus
from nurturing.locks import job_lock
from scoring import services, tasks
from scoring.models import RescoreJob, Ruleset

from ..factories import LeadFactory, ReasonFactory
from .factories import pallet_ruleset

pytestmark = pytest.mark.django_db

FITS = dict(state="SP", interest="Paletes PBR", job_title="Diretor de Logística", company_size=120,
            budget=Decimal("20000"))
NO_BUDGET = dict(state="SP", interest="paletes", job_title="Gerente", company_size=80, budget=Decimal("1000"))


@pytest.fixture
def celery_eager():
    """Tasks queued by the code under test run at once, here."""
    from config.celery import app

    before = {"task_always_eager": app.conf.task_always_eager, "task_eager_propagates": app.conf.task_eager_propagates}
    app.conf.update(task_always_eager=True, task_eager_propagates=True)
    yield
    app.conf.update(before)


@pytest.fixture
def ruleset():
    ruleset = pallet_ruleset()
    services.rescore_job_run(job_id=services.ruleset_activate(ruleset=ruleset).pk)
    return ruleset


@pytest.fixture
def base(ruleset, rep, manager):
    """Leads a rep disqualified ("no need right now") to be looked at again on a date:
    two of the rep's, one unassigned, one not due yet; and one the rules disqualified."""
    not_now = ReasonFactory(slug="no_immediate_need", label="Sem necessidade agora", kind="disqualified")
    yesterday = timezone.now() - timezone.timedelta(days=1)
    next_month = timezone.now() + timezone.timedelta(days=30)
    leads = {}
    for name, owner, when in (("a", rep, yesterday), ("b", rep, yesterday), ("c", None, yesterday),
                              ("later", rep, next_month)):
        lead = LeadFactory(email=f"{name}@x.com.br", first_name=name.upper(), **FITS)
        if owner:
            lead = lead_services.lead_assign(lead=lead, owner=owner, actor=manager)
        leads[name] = lead_services.lead_change_status(
            lead=lead, status=LeadStatus.DISQUALIFIED, actor=rep, reason=not_now, requalify_at=when
        )
    leads["poor"] = LeadFactory(email="poor@x.com.br", **NO_BUDGET)
    services.rescore_job_run(job_id=services.rescore_job_create(ruleset=ruleset).pk)
    return leads


def statuses():
    return dict(Lead.objects.values_list("email", "status"))


def test_requalify_qualifies_due_leads_explains_why_and_emails_owners_and_managers(
    base, rep, manager, django_user_model, django_capture_on_commit_callbacks, celery_eager
):
    from django.contrib.auth.models import Group

    managers = Group.objects.get(name="Sales managers")
    other_manager = django_user_model.objects.create_user("manager2", "manager2@example.com", "x")
    away_manager = django_user_model.objects.create_user("manager3", "manager3@example.com", "x", is_active=False)
    other_manager.groups.add(managers)
    away_manager.groups.add(managers)
    out = StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("requalify", stdout=out)

    assert statuses() == {"a@x.com.br": "qualified", "b@x.com.br": "qualified", "c@x.com.br": "qualified",
                          "later@x.com.br": "disqualified", "poor@x.com.br": "disqualified"}
    job = RescoreJob.objects.get(kind=RescoreJob.Kind.REQUALIFICATION)
    assert job.status == RescoreJob.Status.DONE
    assert "3 now qualified" in out.getvalue()

    event = LeadEvent.objects.get(lead=base["a"], kind=LeadEvent.Kind.REQUALIFIED)
    assert (event.from_status, event.to_status, event.data["job"]) == ("disqualified", "qualified", job.pk)
    assert {item["name"] for item in event.data["explanation"]} == {"Decisor", "Empresa média"}
    assert event.data["score"] == 50

    by_recipient = {tuple(message.to): message for message in mail.outbox}
    assert sorted(by_recipient) == [("manager2@example.com",), ("manager@example.com",), ("rep@example.com",)]
    to_rep = by_recipient[("rep@example.com",)]
    assert to_rep.subject == "2 leads qualify again"
    for lead in (base["a"], base["b"]):
        assert f"http://127.0.0.1:8000/leads/{lead.pk}/" in to_rep.body
    assert f"/leads/{base['c'].pk}/" not in to_rep.body
    assert "Decisor: job_title contains_any diretor, gerente, sócio, ceo (the lead has Diretor de Logística) +30" \
        in to_rep.body
    html, mimetype = to_rep.alternatives[0]
    assert mimetype == "text/html"
    assert f'href="http://127.0.0.1:8000/leads/{base["b"].pk}/"' in html
    to_manager = by_recipient[("manager@example.com",)]
    assert to_manager.subject == "1 lead qualifies again"
    assert f"http://127.0.0.1:8000/leads/{base['c'].pk}/" in to_manager.body
    assert "unassigned" in to_manager.body

    # A second run finds nothing new and tells nobody again.
    with django_capture_on_commit_callbacks(execute=True):
        call_command("requalify", stdout=StringIO())
    assert len(mail.outbox) == 3


def test_a_dry_run_counts_and_changes_nothing(base, django_capture_on_commit_callbacks):
    before = statuses()
    jobs, events = RescoreJob.objects.count(), LeadEvent.objects.count()
    out = StringIO()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        call_command("requalify", "--dry-run", stdout=out)
    text = out.getvalue()
    assert "4 candidates; 3 would become qualified" in text
    assert "disqualified -> qualified: 3" in text
    assert "disqualified -> disqualified: 1" in text
    assert f"would qualify: #{base['a'].pk}" in text
    assert statuses() == before
    assert (RescoreJob.objects.count(), LeadEvent.objects.count()) == (jobs, events)
    assert callbacks == []
    assert mail.outbox == []


def test_the_dry_run_agrees_with_the_real_run(base):
    preview = services.requalify_run(dry_run=True)
    result = services.requalify_run()
    assert (preview["candidates"], preview["qualified"]) == (result["candidates"], result["qualified"]) == (4, 3)


def test_a_second_run_at_once_exits_saying_it_is_already_running(base):
    with job_lock("requalify"):
        with pytest.raises(CommandError, match="already running"):
            call_command("requalify", stdout=StringIO())
        assert tasks.requalify() == "already running"
    assert statuses()["a@x.com.br"] == "disqualified"
    assert not RescoreJob.objects.filter(kind=RescoreJob.Kind.REQUALIFICATION).exists()
    # Once the first run has finished, the next one works.
    assert tasks.requalify()["qualified"] == 3


def test_without_an_active_ruleset_there_is_nothing_to_requalify():
    out = StringIO()
    call_command("requalify", stdout=out)
    assert "No active ruleset" in out.getvalue()


def test_a_lead_without_owner_and_no_managers_is_still_requalified(ruleset, rep, django_capture_on_commit_callbacks,
                                                                    celery_eager):
    not_now = ReasonFactory(slug="no_immediate_need", label="Sem necessidade agora", kind="disqualified")
    lead = lead_services.lead_change_status(
        lead=LeadFactory(**FITS), status=LeadStatus.DISQUALIFIED, actor=rep, reason=not_now,
        requalify_at=timezone.now() - timezone.timedelta(hours=1),
    )
    with django_capture_on_commit_callbacks(execute=True):
        result = services.requalify_run()
    lead.refresh_from_db()
    assert lead.status == LeadStatus.QUALIFIED
    assert result["notified"] == {}
    assert mail.outbox == []


# --- The sweep -------------------------------------------------------------------------------------------


@pytest.fixture
def nudges(monkeypatch):
    """The job ids the sweep hands to the broker."""
    sent = []
    monkeypatch.setattr(tasks.run_rescore_job, "apply_async", lambda args, **options: sent.append(args[0]))
    return sent


def test_the_sweep_enqueues_jobs_left_pending_for_over_a_minute(nudges):
    ruleset = pallet_ruleset(state=Ruleset.State.ACTIVE)
    old = services.rescore_job_create(ruleset=ruleset)
    fresh = services.rescore_job_create(ruleset=ruleset)
    RescoreJob.objects.filter(pk=old.pk).update(created_at=timezone.now() - timezone.timedelta(minutes=2))
    result = tasks.sweep_rescore_jobs()
    assert nudges == [old.pk] == result["enqueued"]
    assert fresh.pk not in nudges
    assert set(RescoreJob.objects.values_list("status", flat=True)) == {RescoreJob.Status.PENDING}


def test_the_sweep_resets_jobs_whose_worker_died_and_they_resume_where_they_stopped(nudges):
    leads = [LeadFactory(email=f"l{i}@x.com.br", **FITS) for i in range(4)]
    ruleset = pallet_ruleset(state=Ruleset.State.ACTIVE)
    job = services.rescore_job_create(ruleset=ruleset)
    long_ago, just_now = timezone.now() - timezone.timedelta(minutes=11), timezone.now()
    # A worker did the first two leads, then died.
    RescoreJob.objects.filter(pk=job.pk).update(
        status=RescoreJob.Status.RUNNING, started_at=long_ago, heartbeat_at=long_ago, worker="celery@gone",
        first_id=leads[0].pk - 1, last_id=leads[-1].pk, done_through_id=leads[1].pk, leads_seen=2,
    )
    alive = services.rescore_job_create(ruleset=ruleset)
    RescoreJob.objects.filter(pk=alive.pk).update(status=RescoreJob.Status.RUNNING, started_at=long_ago,
                                                  heartbeat_at=just_now)
    result = tasks.sweep_rescore_jobs()
    job.refresh_from_db()
    assert (job.status, job.worker) == (RescoreJob.Status.PENDING, "")
    assert result == {"enqueued": [job.pk], "reset": [job.pk]} and nudges == [job.pk]
    assert RescoreJob.objects.get(pk=alive.pk).status == RescoreJob.Status.RUNNING

    tasks.run_rescore_job(job.pk)
    job.refresh_from_db()
    assert (job.status, job.leads_seen, job.done_through_id) == (RescoreJob.Status.DONE, 4, leads[-1].pk)
    statuses = [Lead.objects.get(pk=lead.pk).status for lead in leads]
    assert statuses == ["new", "new", "qualified", "qualified"]


def test_the_sweep_does_not_resume_the_job_of_a_ruleset_that_is_no_longer_active(nudges):
    LeadFactory(**FITS)
    old_ruleset = pallet_ruleset()
    abandoned = services.ruleset_activate(ruleset=old_ruleset)
    long_ago = timezone.now() - timezone.timedelta(minutes=11)
    RescoreJob.objects.filter(pk=abandoned.pk).update(status=RescoreJob.Status.RUNNING, started_at=long_ago,
                                                      heartbeat_at=long_ago)
    current = services.ruleset_activate(ruleset=pallet_ruleset())
    RescoreJob.objects.filter(pk=current.pk).update(created_at=long_ago)
    result = tasks.sweep_rescore_jobs()
    abandoned.refresh_from_db()
    assert (abandoned.status, abandoned.error) == (
        RescoreJob.Status.FAILED, "Not resumed: its ruleset is no longer the active one."
    )
    assert result == {"enqueued": [current.pk], "reset": []} and nudges == [current.pk]


# --- Engagement and out-of-focus leads -------------------------------------------------------------------


def opened_emails(lead, count, *, days_ago=1):
    """The 'email opened' events nurturing writes on the lead's timeline."""
    at = timezone.now() - timezone.timedelta(days=days_ago)
    for _ in range(count):
        event = LeadEvent.objects.create(lead=lead, kind=LeadEvent.Kind.EMAIL_OPENED)
        LeadEvent.objects.filter(pk=event.pk).update(created_at=at)


def test_a_lead_the_rules_disqualified_requalifies_once_it_engages(django_capture_on_commit_callbacks, celery_eager):
    ruleset = pallet_ruleset(email_open_points=4)
    services.rescore_job_run(job_id=services.ruleset_activate(ruleset=ruleset).pk)
    # 30 points (a decision maker) of the 40 needed: disqualified, below the threshold.
    lead = LeadFactory(email="quiet@x.com.br", state="SP", interest="paletes", job_title="Gerente", company_size=10,
                       budget=Decimal("9000"))
    services.rescore_job_run(job_id=services.rescore_job_create(ruleset=ruleset).pk)
    lead.refresh_from_db()
    assert (lead.status, lead.reason.slug) == (LeadStatus.DISQUALIFIED, "below_threshold")
    opened_emails(lead, 2)
    assert services.requalify_run()["qualified"] == 0  # 30 + 2 opens at ~4 points: still short
    opened_emails(lead, 1, days_ago=0)
    with django_capture_on_commit_callbacks(execute=True):
        result = services.requalify_run()
    lead.refresh_from_db()
    assert (result["qualified"], lead.status, lead.reason) == (1, LeadStatus.QUALIFIED, None)
    event = lead.events.get(kind=LeadEvent.Kind.REQUALIFIED)
    engagement = [item for item in event.data["explanation"] if item["name"] == "engagement"]
    assert engagement and engagement[0]["points"] >= 10


def test_requalification_leaves_out_of_focus_leads_until_a_new_ruleset_is_activated():
    ruleset = pallet_ruleset()
    services.rescore_job_run(job_id=services.ruleset_activate(ruleset=ruleset).pk)
    far = LeadFactory(email="far@x.com.br", **{**FITS, "state": "RJ"})
    services.rescore_job_run(job_id=services.rescore_job_create(ruleset=ruleset).pk)
    far.refresh_from_db()
    assert far.status == LeadStatus.OUT_OF_FOCUS
    # The same ruleset serves Rio now, but only a new version re-evaluates out-of-focus leads.
    ruleset.rules.filter(name="Fora de SP").update(value=["SP", "RJ"])
    result = services.requalify_run()
    far.refresh_from_db()
    assert (result["candidates"], far.status) == (0, LeadStatus.OUT_OF_FOCUS)
    new_version = services.ruleset_duplicate(ruleset=ruleset)
    services.rescore_job_run(job_id=services.ruleset_activate(ruleset=new_version).pk)
    far.refresh_from_db()
    assert far.status == LeadStatus.QUALIFIED
