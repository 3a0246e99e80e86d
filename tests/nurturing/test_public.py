"""Unsubscribe (page and RFC 8058 one-click), open pixel, click redirects, provider webhooks."""

import base64
import json

import pytest
from django.test import Client, override_settings
from django.utils import timezone

from leads.models import LeadEvent
from nurturing import dispatch, emails, services
from nurturing.models import Delivery, Enrollment, Suppression
from tests.factories import FormFactory

from .factories import sequence

pytestmark = pytest.mark.django_db


def sent_delivery(lead, steps=((0, 0), (1, 0))):
    seq = sequence(steps=steps)
    services.enrollment_create(sequence=seq, lead=lead)
    dispatch.dispatch_due(now=timezone.now())
    return Delivery.objects.get(lead=lead, step__position=1)


def unsubscribe_path(message):
    https_part = message["List-Unsubscribe"].split(",")[0].strip().strip("<>")
    return "/" + https_part.split("/", 3)[3]


def test_gmail_style_one_click_post_unsubscribes_with_no_cookie_and_nothing_more_is_sent(
        smtp_server, make_disqualified):
    lead = make_disqualified(email="clique@cliente.com.br")
    sent_delivery(lead)
    ((_, message),) = smtp_server.sink.messages
    client = Client(enforce_csrf_checks=True)

    response = client.post(unsubscribe_path(message), data="List-Unsubscribe=One-Click",
                           content_type="application/x-www-form-urlencoded")

    assert 200 <= response.status_code < 300
    assert not response.cookies
    assert Suppression.objects.get().reason == "unsubscribed"
    assert Enrollment.objects.get(lead=lead).status == "exited"
    event = LeadEvent.objects.get(lead=lead, kind="consent")
    assert event.data["action"] == "unsubscribed" and event.data["how"] == "one-click"
    dispatch.dispatch_due(now=timezone.now() + timezone.timedelta(days=5))
    assert len(smtp_server.sink.messages) == 1

    again = client.post(unsubscribe_path(message), data="List-Unsubscribe=One-Click",
                        content_type="application/x-www-form-urlencoded")
    assert again.status_code == 200
    assert LeadEvent.objects.filter(lead=lead, kind="consent").count() == 1


def one_click(client, message):
    return client.post(unsubscribe_path(message), data="List-Unsubscribe=One-Click",
                       content_type="application/x-www-form-urlencoded")


def consent_again(email):
    """The person fills in a public form again and ticks its consent box."""
    FormFactory(fields=["email", "name"], consent_text="Aceito receber e-mails de marketing.", consent_version="v2")
    response = Client().post("/api/v1/forms/contato/submissions/", content_type="application/json",
                             data=json.dumps({"email": email, "name": "Ana", "consent": "on"}))
    assert response.status_code in (201, 202), response.content


def test_an_unsubscribe_after_fresh_consent_suppresses_again_and_a_replay_is_harmless(
        smtp_server, make_disqualified):
    lead = make_disqualified(email="de-novo@cliente.com.br")
    sent_delivery(lead)
    ((_, first),) = smtp_server.sink.messages
    client = Client(enforce_csrf_checks=True)
    assert one_click(client, first).status_code == 200
    assert services.is_suppressed(lead.email)

    consent_again(lead.email)
    assert not services.is_suppressed(lead.email)
    services.enrollment_create(sequence=Delivery.objects.get(lead=lead, step__position=1).enrollment.sequence,
                               lead=lead)
    dispatch.dispatch_due(now=timezone.now())
    assert len(smtp_server.sink.messages) == 2, "written to again after fresh consent"
    second = smtp_server.sink.messages[1][1]

    assert one_click(client, second).status_code == 200

    assert services.is_suppressed(lead.email)
    events = LeadEvent.objects.filter(lead=lead, kind="consent", data__action="unsubscribed").order_by("pk")
    assert [event.data["how"] for event in events] == ["one-click", "one-click"]
    assert set(Enrollment.objects.filter(lead=lead).values_list("status", flat=True)) == {"exited"}
    assert not Delivery.objects.filter(lead=lead, status="pending").exists()
    dispatch.dispatch_due(now=timezone.now() + timezone.timedelta(days=5))
    assert len(smtp_server.sink.messages) == 2

    assert one_click(client, second).status_code == 200  # a replay, or the mail client asking twice
    assert one_click(client, first).status_code == 200
    assert LeadEvent.objects.filter(lead=lead, kind="consent", data__action="unsubscribed").count() == 2
    assert Suppression.objects.get().reason == "unsubscribed"
    assert services.is_suppressed(lead.email)


def test_get_shows_a_confirmation_page_and_changes_nothing(make_disqualified):
    lead = make_disqualified()
    token = emails.unsubscribe_token(lead_id=lead.pk)
    response = Client().get(f"/n/u/{token}/")
    assert response.status_code == 200
    assert b"<form method=\"post\"" in response.content
    assert not Suppression.objects.exists()
    with override_settings(LANGUAGE_CODE="pt-br", FUNIL_SENDER_NAME="Paletes Teste"):
        page = Client(headers={"accept-language": "pt-br"}).get(f"/n/u/{token}/").content.decode()
        assert "Cancelar" in page and "Deixar de receber e-mails de Paletes Teste?" in page


def test_a_forged_unsubscribe_token_is_refused(make_disqualified):
    lead = make_disqualified()
    token = emails.unsubscribe_token(lead_id=lead.pk)
    forged = token[:-3] + "xyz"
    assert Client().post(f"/n/u/{forged}/").status_code == 404
    assert Client().get("/n/u/nothing/").status_code == 404
    assert not Suppression.objects.exists()


def test_the_open_pixel_records_one_engagement_event_per_delivery(smtp_server, make_disqualified):
    lead = make_disqualified()
    delivery = sent_delivery(lead)
    ((_, message),) = smtp_server.sink.messages
    html = next(part for part in message.walk() if part.get_content_type() == "text/html").get_payload(decode=True)
    pixel = html.decode().split('<img src="')[1].split('"')[0]
    path = "/" + pixel.split("/", 3)[3]

    for _ in range(3):
        response = Client().get(path)
        assert response.status_code == 200 and response["Content-Type"] == "image/gif"

    assert LeadEvent.objects.filter(lead=lead, kind="email_opened", data__delivery=delivery.pk).count() == 1
    assert Client().get("/n/o/forged/").status_code == 200  # still an image, no event
    assert LeadEvent.objects.filter(kind="email_opened").count() == 1


def test_a_click_redirects_only_to_a_link_of_the_message_and_counts_as_engagement(
        smtp_server, make_disqualified):
    from scoring.models import Ruleset
    from scoring.services import lead_evaluate
    from tests.scoring.factories import pallet_ruleset

    pallet_ruleset(state=Ruleset.State.ACTIVE, email_open_points=3, email_click_points=7)
    lead = make_disqualified()
    score_before = lead_evaluate(lead=lead).score
    sent_delivery(lead)
    ((_, message),) = smtp_server.sink.messages
    html = next(part for part in message.walk() if part.get_content_type() == "text/html").get_payload(decode=True)
    tracked = html.decode().split('<a href="')[1].split('"')[0].replace("&amp;", "&")
    path = "/" + tracked.split("/", 3)[3]

    response = Client().get(path)

    assert response.status_code == 302
    assert response["Location"] == "https://example.com/paletes?x=1&y=2"
    assert LeadEvent.objects.filter(lead=lead, kind="email_clicked").count() == 1
    assert LeadEvent.objects.filter(lead=lead, kind="email_opened").count() == 1
    assert lead_evaluate(lead=lead).score == score_before + 10

    token = path.rstrip("/").rsplit("/", 1)[1]
    evil = emails.click_url(delivery_id=1, url="https://evil.example/").rsplit("/n/c/", 1)[1].rstrip("/")
    assert Client().get(f"/n/c/{token[:-4]}AAAA/").status_code == 404
    assert Client().get(f"/n/c/{evil[:-6]}{token[-6:]}/").status_code == 404


def postmark(client, body, auth="hook:s3cret"):
    headers = {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(auth.encode()).decode()} if auth else {}
    return client.post("/anymail/postmark/tracking/", data=json.dumps(body), content_type="application/json",
                       **headers)


@override_settings(ANYMAIL={"WEBHOOK_SECRET": "hook:s3cret"})
def test_a_provider_bounce_suppresses_the_lead_and_stops_its_sequences_and_a_replay_is_harmless(
        smtp_server, make_disqualified):
    lead = make_disqualified(email="volta@cliente.com.br")
    delivery = sent_delivery(lead)
    bounce = {"RecordType": "Bounce", "Type": "HardBounce", "ID": 424242, "Email": "volta@cliente.com.br",
              "MessageID": delivery.message_id, "Description": "The address does not exist",
              "BouncedAt": "2026-12-01T10:00:00Z", "Details": "smtp;550 5.1.1", "Tag": "", "Metadata": {}}
    client = Client()

    assert postmark(client, bounce, auth=None).status_code >= 400
    assert postmark(client, bounce, auth="hook:wrong").status_code >= 400
    assert not Suppression.objects.exists()

    assert postmark(client, bounce).status_code == 200
    assert postmark(client, bounce).status_code == 200  # replay

    assert Suppression.objects.get().reason == "bounced"
    assert Enrollment.objects.get(lead=lead).status == "exited"
    assert LeadEvent.objects.filter(lead=lead, kind="note", data__nurturing="bounced").count() == 1
    assert Delivery.objects.get(lead=lead, step__position=2).status == "cancelled"


@override_settings(ANYMAIL={"WEBHOOK_SECRET": "hook:s3cret"})
def test_a_spam_complaint_suppresses_as_complained(make_disqualified):
    lead = make_disqualified(email="spam@cliente.com.br")
    complaint = {"RecordType": "SpamComplaint", "Type": "SpamComplaint", "ID": 77, "Email": lead.email,
                 "MessageID": "x", "BouncedAt": "2026-12-01T10:00:00Z", "Metadata": {}}
    assert postmark(Client(), complaint).status_code == 200
    assert Suppression.objects.get().reason == "complained"
