"""A hard bounce suppresses the address; a soft one (4xx, "soft", transient) is only noted."""

import smtplib

import pytest
from anymail.signals import AnymailTrackingEvent
from django.test import Client, override_settings

from leads.models import LeadEvent
from nurturing import dispatch, services
from nurturing.models import Enrollment, Suppression, TrackingEvent

from .factories import sequence
from .test_public import postmark

pytestmark = pytest.mark.django_db


def postmark_bounce(email, *, kind, details, event_id):
    return {"RecordType": "Bounce", "Type": kind, "ID": event_id, "Email": email, "MessageID": "m-1",
            "Description": "The server answered", "BouncedAt": "2026-12-01T10:00:00Z", "Details": details,
            "Tag": "", "Metadata": {}}


@override_settings(ANYMAIL={"WEBHOOK_SECRET": "hook:s3cret"})
def test_a_hard_bounce_suppresses_and_stops_the_sequences(make_disqualified):
    lead = make_disqualified(email="nao-existe@cliente.com.br")
    services.enrollment_create(sequence=sequence(), lead=lead)
    bounce = postmark_bounce(lead.email, kind="HardBounce", details="smtp;550 5.1.1 no such user", event_id=1)
    assert postmark(Client(), bounce).status_code == 200
    assert Suppression.objects.get().reason == "bounced"
    assert Enrollment.objects.get(lead=lead).status == "exited"
    assert LeadEvent.objects.filter(lead=lead, kind="note", data__nurturing="bounced").count() == 1


@override_settings(ANYMAIL={"WEBHOOK_SECRET": "hook:s3cret"})
def test_a_soft_bounce_is_noted_once_and_suppresses_nothing(make_disqualified):
    lead = make_disqualified(email="cheia@cliente.com.br")
    services.enrollment_create(sequence=sequence(), lead=lead)
    bounce = postmark_bounce(lead.email, kind="SoftBounce", details="smtp;452 4.2.2 mailbox full", event_id=2)
    assert postmark(Client(), bounce).status_code == 200
    assert postmark(Client(), bounce).status_code == 200  # replay
    assert not Suppression.objects.exists()
    assert not services.is_suppressed(lead.email)
    assert Enrollment.objects.get(lead=lead).status == "active"
    (note,) = LeadEvent.objects.filter(lead=lead, kind="note")
    assert note.data["nurturing"] == "soft_bounce" and "not suppressed" in note.note
    assert TrackingEvent.objects.get().event_type == "bounced"


def event(*, mta="", description="", raw=None):
    return AnymailTrackingEvent(event_type="bounced", recipient="x@y.com", mta_response=mta,
                                description=description, esp_event=raw or {})


@pytest.mark.parametrize(("bounce", "soft"), [
    (event(mta="452 4.2.2 Mailbox full"), True),
    (event(mta="smtp; 421 try again later"), True),
    (event(description="4.4.1 connection timed out"), True),
    (event(mta="550 5.1.1 user unknown"), False),
    (event(mta="smtp;554 5.7.1 rejected"), False),
    (event(description="The address does not exist"), False),  # nothing says soft: hard
    (event(raw={"event": "soft_bounce", "msg": {"state": "soft-bounced"}}), True),  # Mandrill, Brevo
    (event(raw={"event": "hard_bounce"}, mta="451 greylisted"), False),  # the provider's word first
    (event(raw={"bounce": {"bounceType": "Transient", "bounceSubType": "MailboxFull"}}), True),  # Amazon SES
    (event(raw={"bounce": {"bounceType": "Permanent", "bounceSubType": "General"}}), False),
    (event(raw={"Type": "SoftBounce"}, mta="smtp;554 mailbox full"), True),  # Postmark
    (event(raw={"type": "activity.soft_bounced"}), True),  # MailerSend
    (event(raw={"severity": "temporary"}), True),  # Mailgun
])
def test_bounces_are_told_apart_by_the_answer_and_the_providers_word(bounce, soft):
    assert services.bounce_is_soft(bounce) is soft


def test_the_dispatcher_suppresses_only_on_a_permanent_refusal_of_the_recipient():
    soft = dispatch.classify(smtplib.SMTPRecipientsRefused({"a@b.com": (452, b"4.2.2 mailbox full")}))
    hard = dispatch.classify(smtplib.SMTPRecipientsRefused({"a@b.com": (550, b"5.1.1 user unknown")}))
    assert isinstance(soft, dispatch.Transient)
    assert isinstance(hard, dispatch.Permanent) and hard.bounced
