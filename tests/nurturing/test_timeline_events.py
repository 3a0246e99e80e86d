"""Entering and leaving a nurture sequence is on the lead's timeline (``nurture_enrolled``,
``nurture_left`` with why), written with the enrollment change, one lead or a segment at once."""

import pytest
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from leads import services as lead_services
from leads.models import LeadEvent
from nurturing import dispatch, services
from nurturing.models import Enrollment, Suppression
from nurturing.timeline import enrollments_end

from .factories import disqualified_segment, sequence

pytestmark = pytest.mark.django_db

ENROLLED, LEFT = LeadEvent.Kind.NURTURE_ENROLLED, LeadEvent.Kind.NURTURE_LEFT


def events(lead, kind):
    return list(LeadEvent.objects.filter(lead=lead, kind=kind).order_by("id"))


def left_why(lead):
    return [event.data["why"] for event in events(lead, LEFT)]


def test_enrolling_by_hand_writes_one_event_with_the_person_and_the_sequence(rep, make_disqualified):
    seq = sequence(name="Sem orçamento")
    lead = make_disqualified()
    services.enrollments_by_hand(sequence=seq, leads=[lead], actor=rep)
    services.enrollments_by_hand(sequence=seq, leads=[lead], actor=rep)  # already enrolled: nothing new
    (event,) = events(lead, ENROLLED)
    enrollment = Enrollment.objects.get(lead=lead)
    assert event.actor == rep
    assert event.data == {"sequence": seq.pk, "sequence_name": "Sem orçamento", "enrollment": enrollment.pk,
                          "how": "hand"}
    assert event.created_at == enrollment.enrolled_at


def test_the_beat_job_writes_one_event_per_lead_it_enrolls(make_disqualified):
    seq = sequence(segment=disqualified_segment())
    leads = [make_disqualified() for _ in range(4)]
    services.enroll_all()
    services.enroll_all()
    for lead in leads:
        (event,) = events(lead, ENROLLED)
        assert (event.actor, event.data["how"], event.data["sequence"]) == (None, "segment", seq.pk)
    assert LeadEvent.objects.filter(kind=ENROLLED).count() == 4


def test_removing_by_hand_notes_who_and_why_once(rep, make_disqualified):
    seq = sequence()
    lead = make_disqualified()
    services.enrollment_create(sequence=seq, lead=lead)
    services.enrollments_by_hand(sequence=seq, leads=[lead], actor=rep, remove=True)
    services.enrollments_by_hand(sequence=seq, leads=[lead], actor=rep, remove=True)
    (event,) = events(lead, LEFT)
    assert event.actor == rep
    assert (event.data["why"], event.data["status"]) == ("removed", "removed")
    assert event.created_at == Enrollment.objects.get(lead=lead).ended_at


def test_completing_the_last_step_notes_completed(smtp_server, make_disqualified):
    seq = sequence(steps=((0, 0),))
    lead = make_disqualified()
    services.enrollment_create(sequence=seq, lead=lead)
    dispatch.dispatch_due(now=timezone.now())
    assert Enrollment.objects.get(lead=lead).status == "completed"
    assert left_why(lead) == ["completed"]
    assert events(lead, LEFT)[0].data["sequence"] == seq.pk


def test_a_multi_step_sequence_is_left_only_after_its_last_step(smtp_server, make_disqualified):
    seq = sequence(steps=((0, 0), (1, 0)))
    leads = [make_disqualified() for _ in range(3)]
    for lead in leads:
        services.enrollment_create(sequence=seq, lead=lead)
    dispatch.dispatch_due(now=timezone.now())
    assert LeadEvent.objects.filter(kind=LEFT).count() == 0
    dispatch.dispatch_due(now=timezone.now() + timezone.timedelta(days=2))
    assert [left_why(lead) for lead in leads] == [["completed"]] * 3


def test_the_beat_job_notes_a_lead_that_qualified(make_disqualified):
    sequence(segment=disqualified_segment())
    lead = make_disqualified()
    services.enroll_all()
    lead_services.lead_change_status(lead=lead, status="qualified")
    services.enroll_all()
    assert left_why(lead) == ["qualified"]


def test_the_dispatcher_notes_a_lead_that_qualified_before_its_next_step(smtp_server, make_disqualified):
    seq = sequence()
    lead = make_disqualified()
    services.enrollment_create(sequence=seq, lead=lead)
    lead_services.lead_change_status(lead=lead, status="qualified")
    dispatch.dispatch_due(now=timezone.now())
    assert Enrollment.objects.get(lead=lead).status == "exited"
    assert left_why(lead) == ["qualified"]


def test_unsubscribing_notes_unsubscribed(make_disqualified):
    seq = sequence()
    lead = make_disqualified()
    services.enrollment_create(sequence=seq, lead=lead)
    services.lead_unsubscribe(lead_id=lead.pk)
    services.lead_unsubscribe(lead_id=lead.pk)
    assert left_why(lead) == ["unsubscribed"]


def test_the_dispatcher_notes_a_suppressed_address(smtp_server, make_disqualified):
    seq = sequence()
    lead = make_disqualified()
    services.enrollment_create(sequence=seq, lead=lead)
    # On the list without going through suppression_add (e.g. kept from before an import).
    Suppression.objects.create(email_hash=services.email_hash(lead.email), reason="manual")
    dispatch.dispatch_due(now=timezone.now())
    assert left_why(lead) == ["suppressed"]


def test_a_bounce_notes_bounced_in_every_sequence_the_lead_was_in(make_disqualified):
    lead = make_disqualified()
    first, second = sequence(slug="a"), sequence(slug="b", name="Outra")
    services.enrollment_create(sequence=first, lead=lead)
    services.enrollment_create(sequence=second, lead=lead)
    services.suppression_add(email=lead.email, reason=Suppression.Reason.BOUNCED)
    assert sorted((e.data["sequence"], e.data["why"]) for e in events(lead, LEFT)) == [
        (first.pk, "bounced"), (second.pk, "bounced")]


def test_the_events_roll_back_with_the_enrollment_change(make_disqualified):
    seq = sequence()
    lead = make_disqualified()
    enrollment, _created = services.enrollment_create(sequence=seq, lead=lead)
    with pytest.raises(RuntimeError), transaction.atomic():
        enrollments_end(enrollment_ids=[enrollment.pk], status="removed", reason="removed", now=timezone.now())
        assert left_why(lead) == ["removed"]
        raise RuntimeError("the caller failed after ending it")
    assert Enrollment.objects.get(pk=enrollment.pk).status == "active"
    assert events(lead, LEFT) == []


@pytest.mark.parametrize(("language", "texts"), [
    ("en", ["Entered a nurture sequence", "Left a nurture sequence", "Sem orçamento", "removed by hand"]),
    ("pt-BR", ["Entrou em uma sequência de nutrição", "Saiu de uma sequência de nutrição", "Sem orçamento",
               "removido manualmente"]),
])
def test_the_lead_page_shows_both_events_with_readable_labels(client, manager, make_disqualified, language, texts):
    seq = sequence(name="Sem orçamento")
    lead = make_disqualified()
    services.enrollments_by_hand(sequence=seq, leads=[lead], actor=manager)
    services.enrollments_by_hand(sequence=seq, leads=[lead], actor=manager, remove=True)
    client.force_login(manager)
    html = client.get(reverse("leads:detail", args=[lead.pk]), HTTP_ACCEPT_LANGUAGE=language).content.decode()
    for text in texts:
        assert text in html, text
    assert "nurture_left" not in html.replace('class="kind-nurture_left"', "")
