"""List-Unsubscribe's mailto: a message to the unsubscribe mailbox, posted by the provider's
inbound webhook (here Postmark's, through anymail), unsubscribes like the one-click POST."""

import base64
import json
from textwrap import dedent
from urllib.parse import unquote

import pytest
from django.db import OperationalError
from django.test import Client, override_settings
from django.utils import timezone

from leads.models import LeadEvent
from nurturing import dispatch, emails, services
from nurturing.models import Delivery, Enrollment, Suppression

from .factories import sequence
from .test_public import sent_delivery

pytestmark = pytest.mark.django_db

SECRET = {"WEBHOOK_SECRET": "hook:s3cret"}


def mailto_of(message):
    """(mailbox, subject) of the mailto in a received message's List-Unsubscribe."""
    mailto = message["List-Unsubscribe"].split(",")[1].strip().strip("<>")
    address, _, query = mailto.removeprefix("mailto:").partition("?subject=")
    return address, unquote(query)


def postmark_inbound(*, sender, to, subject, text="", message_id="b7bc2f4a-e38e-4336-af7d-e6c392c2f817",
                     original_recipient=None):
    """The JSON Postmark posts for one inbound message (without the raw MIME), as in
    anymail's own test-suite (tests/test_postmark_inbound.py)."""
    return {
        "FromFull": {"Email": sender, "Name": "", "MailboxHash": ""},
        "ToFull": [{"Email": to, "Name": "", "MailboxHash": ""}],
        "CcFull": [],
        "BccFull": [],
        "OriginalRecipient": original_recipient or to,
        "Subject": subject,
        "MessageID": message_id,
        "Date": "Tue, 1 Dec 2026 10:00:00 -0300",
        "TextBody": text,
        "HtmlBody": "",
        "StrippedTextReply": "",
        "Tag": "",
        "Headers": [
            {"Name": "Return-Path", "Value": f"<{sender}>"},
            {"Name": "Received", "Value": "from mail.cliente.com.br by inbound.postmarkapp.com ..."},
            {"Name": "X-Spam-Status", "Value": "No"},
            {"Name": "MIME-Version", "Value": "1.0"},
            {"Name": "Message-ID", "Value": f"<{message_id}@mail.cliente.com.br>"},
        ],
        "Attachments": [],
    }


def post_inbound(client, body, auth="hook:s3cret"):
    headers = {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(auth.encode()).decode()} if auth else {}
    return client.post("/anymail/postmark/inbound/", data=json.dumps(body), content_type="application/json",
                       **headers)


def assert_nothing_changed(lead):
    assert not Suppression.objects.exists()
    assert not services.is_suppressed(lead.email)
    assert Enrollment.objects.get(lead=lead).status == "active"
    assert not LeadEvent.objects.filter(lead=lead, kind="consent").exists()


@override_settings(ANYMAIL=SECRET, FUNIL_UNSUBSCRIBE_MAILTO="descadastro@funil.example.com")
def test_an_email_to_the_unsubscribe_mailbox_unsubscribes_like_one_click_and_a_replay_is_harmless(
        smtp_server, make_disqualified):
    lead = make_disqualified(email="mailto@cliente.com.br")
    delivery = sent_delivery(lead)
    ((_, message),) = smtp_server.sink.messages
    mailbox, subject = mailto_of(message)
    assert mailbox == "descadastro@funil.example.com"
    body = postmark_inbound(sender=lead.email, to=mailbox, subject=f"Re:  UNSUBSCRIBE  {subject.split()[1]}")
    client = Client(enforce_csrf_checks=True)

    assert post_inbound(client, body, auth=None).status_code >= 400
    assert post_inbound(client, body, auth="hook:wrong").status_code >= 400
    assert_nothing_changed(lead)

    response = post_inbound(client, body)

    assert response.status_code == 200
    assert Suppression.objects.get().reason == "unsubscribed"
    assert services.is_suppressed(lead.email)
    assert Enrollment.objects.get(lead=lead).status == "exited"
    assert Delivery.objects.get(lead=lead, step__position=2).status == "cancelled"
    event = LeadEvent.objects.get(lead=lead, kind="consent")
    assert event.data == {"action": "unsubscribed", "channel": "email", "how": "mailto", "delivery": delivery.pk}
    dispatch.dispatch_due(now=timezone.now() + timezone.timedelta(days=5))
    assert len(smtp_server.sink.messages) == 1

    assert post_inbound(client, body).status_code == 200  # the provider posts it again
    assert LeadEvent.objects.filter(lead=lead, kind="consent").count() == 1
    assert Suppression.objects.count() == 1


@override_settings(ANYMAIL=SECRET)
def test_the_token_may_be_the_first_line_of_the_body(make_disqualified):
    lead = make_disqualified(email="corpo@cliente.com.br")
    services.enrollment_create(sequence=sequence(steps=((0, 0), (1, 0))), lead=lead)
    token = emails.unsubscribe_token(lead_id=lead.pk)
    body = postmark_inbound(sender="outro-endereco@cliente.com.br", to=emails.unsubscribe_mailbox(), subject="",
                            text=f"\n  unsubscribe {token}\n\nEnviado do meu celular\n")

    assert post_inbound(Client(), body).status_code == 200

    assert services.is_suppressed(lead.email)
    assert LeadEvent.objects.get(lead=lead, kind="consent").data["how"] == "mailto"


@override_settings(ANYMAIL=SECRET)
def test_a_raw_mime_message_with_an_encoded_and_folded_subject_is_read(make_disqualified):
    lead = make_disqualified(email="raw@cliente.com.br")
    services.enrollment_create(sequence=sequence(steps=((0, 0), (1, 0))), lead=lead)
    token = emails.unsubscribe_token(lead_id=lead.pk, delivery_id=None)
    raw = dedent(f"""\
        Received: from mail.cliente.com.br by inbound.postmarkapp.com ...
        MIME-Version: 1.0
        Message-ID: <raw-1@mail.cliente.com.br>
        From: "Cliente" <{lead.email}>
        To: {emails.unsubscribe_mailbox()}
        Subject: =?utf-8?q?RES=3A_Unsubscribe?=
         {token}
        Date: Tue, 1 Dec 2026 10:00:00 -0300
        Content-Type: text/plain; charset="utf-8"

        Por favor, não me mandem mais nada.
        """)
    body = {"RawEmail": raw, "OriginalRecipient": emails.unsubscribe_mailbox(), "MessageID": "raw-1",
            "Headers": [{"Name": "Return-Path", "Value": f"<{lead.email}>"}]}

    assert post_inbound(Client(), body).status_code == 200

    assert services.is_suppressed(lead.email)
    assert LeadEvent.objects.filter(lead=lead, kind="consent").count() == 1


@override_settings(ANYMAIL=SECRET)
def test_a_forged_token_or_a_bare_unsubscribe_from_the_leads_address_changes_nothing(make_disqualified):
    lead = make_disqualified(email="forjado@cliente.com.br")
    services.enrollment_create(sequence=sequence(steps=((0, 0), (1, 0))), lead=lead)
    token = emails.unsubscribe_token(lead_id=lead.pk)
    payload, timestamp, _signature = token.split(":")
    with override_settings(SECRET_KEY="someone-elses-key"):
        other_key = emails.unsubscribe_token(lead_id=lead.pk)
    click_token = emails.click_url(delivery_id=1, url="https://example.com/").rstrip("/").rsplit("/", 1)[1]
    subjects = [
        f"unsubscribe {payload}:{timestamp}:{'A' * 43}",  # signature forged
        f"unsubscribe {token[:-2]}xy",  # tampered
        f"unsubscribe {other_key}",  # signed with another key
        f"unsubscribe {click_token}",  # signed by us, for something else
        "unsubscribe",  # From is the lead's address, but From proves nothing
        "",
    ]
    client = Client()
    for number, subject in enumerate(subjects):
        body = postmark_inbound(sender=lead.email, to=emails.unsubscribe_mailbox(), subject=subject,
                                text=subject, message_id=f"forged-{number}")
        assert post_inbound(client, body).status_code == 200, subject

    assert_nothing_changed(lead)


@override_settings(ANYMAIL=SECRET, FUNIL_UNSUBSCRIBE_MAILTO="descadastro@funil.example.com")
def test_a_message_to_another_mailbox_is_ignored_even_with_a_valid_token(make_disqualified):
    lead = make_disqualified(email="vendas-cliente@cliente.com.br")
    services.enrollment_create(sequence=sequence(steps=((0, 0), (1, 0))), lead=lead)
    token = emails.unsubscribe_token(lead_id=lead.pk)
    body = postmark_inbound(sender=lead.email, to="vendas@funil.example.com", subject=f"unsubscribe {token}")

    assert post_inbound(Client(), body).status_code == 200

    assert_nothing_changed(lead)


@override_settings(ANYMAIL=SECRET)
def test_a_failure_while_applying_is_logged_and_answered_2xx_but_a_database_outage_is_retried(
        make_disqualified, monkeypatch, caplog):
    lead = make_disqualified(email="falha@cliente.com.br")
    token = emails.unsubscribe_token(lead_id=lead.pk)
    body = postmark_inbound(sender=lead.email, to=emails.unsubscribe_mailbox(), subject=f"unsubscribe {token}")

    def broken(**kwargs):
        raise ValueError("a bug")

    monkeypatch.setattr(services, "lead_unsubscribe", broken)
    assert post_inbound(Client(), body).status_code == 200
    assert "failed, ignored" in caplog.text

    def unavailable(**kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(services, "lead_unsubscribe", unavailable)
    # The 503 middleware answers; the provider posts the message again later.
    assert post_inbound(Client(raise_request_exception=False), body).status_code == 503
    assert not Suppression.objects.exists()


@pytest.mark.parametrize(("subject", "text", "found"), [
    ("unsubscribe TOKEN", "", ["TOKEN"]),
    ("Re: unsubscribe TOKEN", "", ["TOKEN"]),
    ("RE: Fwd:   UnSubscribe    TOKEN  ", "", ["TOKEN"]),
    ("RES: ENC: unsubscribe: TOKEN", "", ["TOKEN"]),
    ("unsubscribe%20TOKEN_QUOTED", "", ["TOKEN"]),  # the client left the mailto's subject encoded
    ("Re: TOKEN", "", ["TOKEN"]),  # the keyword lost, the token alone
    ("\u00a0unsubscribe\u00a0TOKEN", "", ["TOKEN"]),
    ("", "\n\n  unsubscribe TOKEN\nSent from my phone", ["TOKEN"]),
    ("Descadastrar", "UNSUBSCRIBE TOKEN", ["TOKEN"]),
    ("unsubscribe TOKEN", "unsubscribe TOKEN", ["TOKEN"]),  # once
    ("unsubscribe TOKEN", "unsubscribe OTHER", ["TOKEN", "OTHER"]),  # both tried, subject first
    ("unsubscribe", "", []),
    ("unsubscribe me please", "", []),
    ("", "Hello,\nunsubscribe TOKEN", []),  # only the first line of the body
    (None, None, []),
])
def test_token_extraction(subject, text, found):
    token = emails.unsubscribe_token(lead_id=12, delivery_id=34)
    other = emails.unsubscribe_token(lead_id=56)
    quoted = emails.unsubscribe_mailto(token).split("?subject=")[1].split("%20", 1)[1]

    def fill(value):
        if value is None:
            return None
        return value.replace("TOKEN_QUOTED", quoted).replace("TOKEN", token).replace("OTHER", other)

    expected = [{"TOKEN": token, "OTHER": other}[name] for name in found]
    assert emails.mailto_unsubscribe_tokens(subject=fill(subject), text=fill(text)) == expected


def test_the_mailbox_is_the_configured_address_or_unsubscribe_at_the_senders_domain():
    with override_settings(FUNIL_UNSUBSCRIBE_MAILTO="", DEFAULT_FROM_EMAIL="Funil <ola@funil.example.com>"):
        assert emails.unsubscribe_mailbox() == "unsubscribe@funil.example.com"
        assert emails.unsubscribe_mailto("T").startswith("mailto:unsubscribe@funil.example.com?subject=")
    with override_settings(FUNIL_UNSUBSCRIBE_MAILTO="Sair <sair@funil.example.com>"):
        assert emails.unsubscribe_mailbox() == "sair@funil.example.com"
