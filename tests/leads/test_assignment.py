"""Assignment rules: round robin, territories, interests, caps; applied wherever a lead
becomes qualified, on the timeline, with an email to the rep."""

from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from django.core import mail
from django.utils import timezone

from leads import roles, services
from leads.assignment import leads_auto_assign
from leads.capture import clean_lead_data
from leads.models import AssignmentRule, Lead, LeadEvent, LeadStatus
from scoring import services as scoring
from tests.scoring.factories import pallet_ruleset

from ..factories import FormFactory, LeadFactory, ReasonFactory, UserFactory

pytestmark = pytest.mark.django_db

FITS = dict(state="SP", interest="Paletes PBR", job_title="Diretor de Logística", company_size=120,
            budget=Decimal("20000"))


@pytest.fixture
def celery_eager():
    """Tasks queued by the code under test run at once, here."""
    from config.celery import app

    before = {"task_always_eager": app.conf.task_always_eager, "task_eager_propagates": app.conf.task_eager_propagates}
    app.conf.update(task_always_eager=True, task_eager_propagates=True)
    yield
    app.conf.update(before)


def make_rep(username, active=True):
    user = UserFactory(username=username, is_active=active)
    user.groups.add(Group.objects.get(name=roles.SALES))
    return user


def qualified_unassigned(**fields):
    lead = LeadFactory(**fields)
    Lead.objects.filter(pk=lead.pk).update(status=LeadStatus.QUALIFIED)
    return lead


def test_a_rule_matches_by_state_and_interest_ignoring_case_and_accents():
    rule = AssignmentRule(states="sp, RJ", interest_keywords="palete, caixa de madeira")
    assert rule.matches(Lead(state="SP", interest="PALETES usados"))
    assert rule.matches(Lead(state="rj", interest="Caixa de Madéira grande"))
    assert not rule.matches(Lead(state="MG", interest="paletes"))
    assert not rule.matches(Lead(state="SP", interest="empilhadeira"))
    assert AssignmentRule().matches(Lead(state="", interest=""))


def test_round_robin_among_active_reps_skips_the_inactive_and_respects_the_cap():
    ana, bruno, _away = make_rep("ana"), make_rep("bruno"), make_rep("away", active=False)
    rule = AssignmentRule.objects.create(name="Todos", max_open_leads=2)
    leads = [qualified_unassigned() for _ in range(5)]
    assigned = leads_auto_assign(lead_ids=[lead.pk for lead in leads])
    owners = [assigned.get(lead.pk) for lead in sorted(leads, key=lambda lead: lead.pk)]
    assert sorted(user.username for user in owners if user) == ["ana", "ana", "bruno", "bruno"]
    assert owners.count(None) == 1  # both reps are at the cap: the fifth stays unassigned
    rule.refresh_from_db()
    assert rule.last_assigned in (ana, bruno)
    event = LeadEvent.objects.filter(kind=LeadEvent.Kind.ASSIGNED).first()
    assert event.data["rule_name"] == "Todos" and event.actor is None


def test_territories_go_to_their_reps_and_the_next_rule_catches_the_rest():
    sp, others = make_rep("sp"), make_rep("others")
    territory = AssignmentRule.objects.create(name="SP", order=1, states="SP")
    territory.reps.add(sp)
    rest = AssignmentRule.objects.create(name="Resto", order=2)
    rest.reps.add(others)
    paulista, carioca = qualified_unassigned(state="SP"), qualified_unassigned(state="RJ")
    assert leads_auto_assign(lead_ids=[paulista.pk, carioca.pk]) == {paulista.pk: sp, carioca.pk: others}


def test_leads_already_owned_or_not_qualified_are_left_alone(rep):
    AssignmentRule.objects.create(name="Todos")
    owned = qualified_unassigned()
    services.lead_assign(lead=owned, owner=rep)
    new = LeadFactory()
    assert leads_auto_assign(lead_ids=[owned.pk, new.pk]) == {}


def test_a_captured_lead_that_qualifies_is_assigned_on_the_same_transaction_and_the_rep_is_emailed(
    django_capture_on_commit_callbacks, celery_eager,
):
    ana = make_rep("ana")
    AssignmentRule.objects.create(name="Todos")
    scoring.rescore_job_run(job_id=scoring.ruleset_activate(ruleset=pallet_ruleset()).pk)
    form = FormFactory()
    clean = clean_lead_data({"email": "diretor@paletes.com.br", "name": "Diretor", "phone": "11987654321",
                             "state": "SP", "interest": "Paletes PBR", "job_title": "Diretor de Logística",
                             "company_size": "120", "budget": "20000"},
                            accepted=list(form.get_accepted_fields()) + ["job_title", "company_size", "budget"],
                            required=[], standard=form.STANDARD_FIELDS)
    with django_capture_on_commit_callbacks(execute=True):
        lead, created = services.lead_capture(clean=clean, form=form)
    lead.refresh_from_db()
    assert created and lead.status == LeadStatus.QUALIFIED and lead.owner == ana
    assert lead.events.filter(kind=LeadEvent.Kind.ASSIGNED).count() == 1
    assert [message.to for message in mail.outbox] == [["ana@example.com"]]
    assert f"/leads/{lead.pk}/" in mail.outbox[0].body


def test_requalification_assigns_the_leads_it_qualifies(django_capture_on_commit_callbacks, celery_eager, rep):
    ana = make_rep("ana")
    ruleset = pallet_ruleset()
    scoring.rescore_job_run(job_id=scoring.ruleset_activate(ruleset=ruleset).pk)
    territory = AssignmentRule.objects.create(name="SP", states="SP")
    territory.reps.add(ana)
    not_now = ReasonFactory(slug="no_immediate_need", label="Sem necessidade agora", kind="disqualified")
    lead = services.lead_change_status(
        lead=LeadFactory(**FITS), status=LeadStatus.DISQUALIFIED, actor=rep, reason=not_now,
        requalify_at=timezone.now() - timezone.timedelta(days=1),
    )
    with django_capture_on_commit_callbacks(execute=True):
        scoring.requalify_run()
    lead.refresh_from_db()
    assert lead.status == LeadStatus.QUALIFIED and lead.owner == ana
    assert any(message.to == ["ana@example.com"] for message in mail.outbox)


def test_a_person_qualifying_an_unassigned_lead_applies_the_rules(manager):
    ana = make_rep("ana")
    AssignmentRule.objects.create(name="Todos")
    lead = services.lead_change_status(lead=LeadFactory(), status=LeadStatus.QUALIFIED, actor=manager)
    assert lead.owner == ana


def test_without_rules_nothing_is_assigned():
    make_rep("ana")
    lead = services.lead_change_status(lead=LeadFactory(), status=LeadStatus.QUALIFIED)
    assert lead.owner is None


def test_rating_a_lead_keeps_the_rules_that_let_it_through(rep):
    scoring.rescore_job_run(job_id=scoring.ruleset_activate(ruleset=pallet_ruleset()).pk)
    lead = LeadFactory(**FITS)
    scoring.lead_qualify(lead=lead)
    lead = services.lead_rate(lead=lead, actor=rep, fit="good")
    event = lead.events.get(kind=LeadEvent.Kind.RATED)
    assert event.data["fit"] == "good" and len(event.data["rules"]) == 2
    assert lead.fit_rated_by == rep and lead.first_touched_at is not None
    with pytest.raises(Exception, match="bad fit"):
        services.lead_rate(lead=lead, actor=rep, fit="bad", note=" ")


def test_first_touch_is_the_first_action_after_qualification_only(rep):
    lead = LeadFactory()
    services.lead_add_note(lead=lead, author=rep, text="antes")
    lead.refresh_from_db()
    assert lead.first_touched_at is None
    lead = services.lead_change_status(lead=lead, status=LeadStatus.QUALIFIED)
    services.lead_add_note(lead=lead, author=rep, text="primeiro")
    lead.refresh_from_db()
    first = lead.first_touched_at
    assert first is not None
    services.lead_add_note(lead=lead, author=rep, text="segundo")
    lead.refresh_from_db()
    assert lead.first_touched_at == first


def test_the_api_rates_through_the_same_service(rep):
    from rest_framework.test import APIClient

    lead = services.lead_change_status(lead=LeadFactory(), status=LeadStatus.QUALIFIED)
    client = APIClient()
    client.force_authenticate(rep)
    refused = client.post(f"/api/v1/leads/{lead.pk}/rate/", {"fit": "bad"}, format="json")
    assert refused.status_code == 400 and "note" in refused.json()["errors"]
    response = client.post(f"/api/v1/leads/{lead.pk}/rate/", {"fit": "bad", "note": "Só revende"}, format="json")
    assert response.status_code == 200
    lead.refresh_from_db()
    assert (lead.fit, lead.fit_note, lead.fit_rated_by) == ("bad", "Só revende", rep)
