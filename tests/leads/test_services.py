from decimal import Decimal

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction

from leads import services
from leads.models import Lead, LeadEvent, LeadStatus, StatusSetBy

from ..factories import LeadFactory, ReasonFactory

pytestmark = pytest.mark.django_db


def test_creating_a_lead_writes_its_captured_event():
    lead = LeadFactory(email="ana@empresa.com.br")
    assert list(lead.events.values_list("kind", flat=True)) == [LeadEvent.Kind.CAPTURED]
    assert lead.status == LeadStatus.NEW
    assert lead.last_activity_at is not None


def test_the_same_email_cannot_exist_twice_but_many_leads_may_have_none():
    LeadFactory(email="ana@empresa.com.br")
    with pytest.raises(IntegrityError), transaction.atomic():
        LeadFactory(email="ana@empresa.com.br")
    LeadFactory(email=None, phone="+5511987654321")
    LeadFactory(email=None, phone="")
    LeadFactory(email=None, phone="")
    assert Lead.objects.filter(email__isnull=True).count() == 3


def test_a_phone_only_lead_is_unique_by_phone():
    LeadFactory(email=None, phone="+5511987654321")
    with pytest.raises(IntegrityError), transaction.atomic():
        LeadFactory(email=None, phone="+5511987654321")


def test_a_person_disqualifying_records_who_why_and_the_event(rep):
    lead = LeadFactory()
    reason = ReasonFactory()
    lead = services.lead_change_status(
        lead=lead, status=LeadStatus.DISQUALIFIED, actor=rep, reason=reason, note="Volta em março"
    )
    assert lead.status == LeadStatus.DISQUALIFIED
    assert lead.status_set_by == StatusSetBy.PERSON
    assert lead.status_changed_by == rep
    assert lead.disqualified_at is not None
    event = lead.events.get(kind=LeadEvent.Kind.STATUS_CHANGED)
    assert (event.from_status, event.to_status, event.actor, event.reason, event.note) == (
        LeadStatus.NEW, LeadStatus.DISQUALIFIED, rep, reason, "Volta em março"
    )


def test_the_rules_changing_status_mark_it_as_set_by_rules():
    lead = services.lead_change_status(lead=LeadFactory(), status=LeadStatus.QUALIFIED)
    assert lead.status_set_by == StatusSetBy.RULES
    assert lead.qualified_at is not None


@pytest.mark.parametrize("status", [LeadStatus.DISQUALIFIED, LeadStatus.OUT_OF_FOCUS])
def test_disqualifying_without_a_reason_is_refused_and_changes_nothing(status):
    lead = LeadFactory()
    with pytest.raises(ValidationError) as error:
        services.lead_change_status(lead=lead, status=status)
    assert "reason" in error.value.message_dict
    lead.refresh_from_db()
    assert lead.status == LeadStatus.NEW
    assert lead.events.count() == 1


def test_a_reason_for_the_other_kind_is_refused():
    reason = ReasonFactory(slug="outside_area", label="Fora da área", kind="out_of_focus")
    with pytest.raises(ValidationError):
        services.lead_change_status(lead=LeadFactory(), status=LeadStatus.DISQUALIFIED, reason=reason)


def test_converting_keeps_the_deal_value():
    lead = services.lead_change_status(lead=LeadFactory(), status=LeadStatus.CONVERTED, deal_value=Decimal("12500"))
    assert lead.deal_value == Decimal("12500")
    assert lead.converted_at is not None


def test_a_rep_cannot_act_on_another_reps_lead(rep, other_rep, manager):
    lead = services.lead_assign(lead=LeadFactory(), owner=other_rep, actor=manager)
    with pytest.raises(PermissionDenied):
        services.lead_change_status(lead=lead, status=LeadStatus.QUALIFIED, actor=rep)
    with pytest.raises(PermissionDenied):
        services.lead_add_note(lead=lead, author=rep, text="hi")


def test_a_rep_may_claim_an_unassigned_lead_but_not_give_it_away(rep, other_rep):
    lead = services.lead_assign(lead=LeadFactory(), owner=rep, actor=rep)
    assert lead.owner == rep
    assert lead.events.filter(kind=LeadEvent.Kind.ASSIGNED).get().data == {"from": None, "to": "rep"}
    with pytest.raises(PermissionDenied):
        services.lead_assign(lead=lead, owner=other_rep, actor=rep)


def test_updating_contact_fields_records_what_changed(rep):
    lead = LeadFactory(company="Velha")
    services.lead_update_contact(lead=lead, actor=rep, fields={"company": "Nova", "city": "Campinas"})
    event = lead.events.get(kind=LeadEvent.Kind.UPDATED)
    assert event.data["changes"] == {"company": ["Velha", "Nova"], "city": ["", "Campinas"]}


def test_a_note_is_an_event_and_counts_as_activity(rep):
    lead = LeadFactory()
    before = lead.last_activity_at
    services.lead_add_note(lead=lead, author=rep, text="Ligou de volta")
    lead.refresh_from_db()
    assert lead.events.filter(kind=LeadEvent.Kind.NOTE, note="Ligou de volta").exists()
    assert lead.last_activity_at >= before
