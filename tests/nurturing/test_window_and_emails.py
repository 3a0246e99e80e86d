from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from django.core import signing
from django.test import override_settings

from nurturing import emails
from nurturing.window import next_in_window
from tests.factories import LeadFactory

from .factories import template

SP = ZoneInfo("America/Sao_Paulo")
WEEKDAYS = dict(days=[0, 1, 2, 3, 4], from_hour=8, until_hour=18, time_zone="America/Sao_Paulo")


def test_a_moment_inside_the_window_is_kept():
    at = datetime(2026, 12, 2, 10, 30, tzinfo=SP)  # a Wednesday
    assert next_in_window(at, **WEEKDAYS) == at


def test_before_opening_waits_for_the_opening_the_same_day():
    at = datetime(2026, 12, 2, 6, 0, tzinfo=SP)
    assert next_in_window(at, **WEEKDAYS) == datetime(2026, 12, 2, 8, 0, tzinfo=SP)


def test_friday_evening_waits_for_monday_morning_in_sao_paulo_time():
    friday_evening_utc = datetime(2026, 12, 4, 18, 0, tzinfo=SP).astimezone(ZoneInfo("UTC"))
    opens = next_in_window(friday_evening_utc, **WEEKDAYS)
    assert opens.astimezone(SP) == datetime(2026, 12, 7, 8, 0, tzinfo=SP)
    assert opens.tzinfo == ZoneInfo("UTC")


def test_until_24_means_until_midnight():
    at = datetime(2026, 12, 5, 23, 59, tzinfo=SP)  # Saturday
    assert next_in_window(at, days=[5], from_hour=20, until_hour=24, time_zone="America/Sao_Paulo") == at


def test_text_is_derived_from_the_html_with_paragraphs_items_and_link_targets():
    text = emails.html_to_text('<style>p{}</style><p>Olá <b>Ana</b>,</p><ul><li>PBR</li><li>Sob medida</li></ul>'
                               '<p><a href="https://example.com/x">veja</a></p>')
    assert "p{}" not in text
    assert "Olá Ana," in text
    assert "* PBR" in text and "* Sob medida" in text
    assert "veja (https://example.com/x)" in text


@pytest.mark.django_db
@override_settings(FUNIL_SENDER_NAME="Paletes Exemplo", FUNIL_SENDER_ADDRESS="Rua A, 1 - São Paulo/SP",
                   FUNIL_BASE_URL="https://funil.example.com", DEFAULT_FROM_EMAIL="Paletes <news@paletes.example>")
def test_a_message_has_the_leads_variables_footer_tracking_and_one_click_headers():
    lead = LeadFactory(first_name="Bia", company="Madeireira Bia")
    message, message_id = emails.build_message(template=template(), lead=lead, to=lead.email, delivery_id=77)

    assert message.subject == "Olá Bia"
    html = message.alternatives[0][0]
    assert "Novidades para a Madeireira Bia" in html
    assert "Paletes Exemplo" in html and "Rua A, 1" in html
    assert "https://example.com/paletes" not in html.split("<hr")[0]  # the body's link is tracked
    assert "https://funil.example.com/n/o/" in html
    assert "Olá Bia" in message.body and "Paletes Exemplo" in message.body and "Rua A, 1" in message.body
    assert "https://example.com/paletes?x=1&y=2" in message.body  # the text part keeps the real link

    headers = message.message()
    assert headers["Message-ID"] == message_id and message_id.endswith("@paletes.example>")
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    https_part, mailto_part = [part.strip(" <>") for part in headers["List-Unsubscribe"].split(",")]
    assert https_part.startswith("https://funil.example.com/n/u/")
    assert mailto_part.startswith("mailto:unsubscribe@paletes.example?subject=")
    token = https_part.rstrip("/").rsplit("/", 1)[1]
    assert emails.read_unsubscribe_token(token) == (lead.pk, 77)


@pytest.mark.django_db
def test_tracked_links_decode_to_the_original_url_and_a_tampered_one_is_refused():
    html = emails.track_links('<a href="https://example.com/a?b=1&amp;c=2">x</a>', delivery_id=5)
    token = html.split("/n/c/")[1].split("/")[0]
    assert emails.read_click_token(token) == (5, "https://example.com/a?b=1&c=2")
    with pytest.raises(signing.BadSignature):
        emails.read_click_token(token[:-2] + ("AA" if not token.endswith("AA") else "BB"))


@pytest.mark.django_db
def test_a_written_text_body_is_used_as_it_is():
    lead = LeadFactory(first_name="Caio")
    message, _ = emails.build_message(template=template(text="Oi {{ lead.first_name }} & cia"), lead=lead,
                                      to=lead.email)
    assert message.body.startswith("Oi Caio & cia")


@pytest.mark.django_db
@pytest.mark.parametrize(("language", "worker_language", "footer", "unsubscribe"), [
    ("pt-br", "en", "Você recebe este e-mail porque entrou em contato conosco.", "Cancelar inscrição"),
    ("en", "pt-br", "You receive this email because you contacted us.", "Unsubscribe"),
])
def test_the_footer_is_in_the_emails_language_whatever_the_senders(language, worker_language, footer, unsubscribe):
    from django.utils import translation

    lead = LeadFactory(first_name="Joana")
    with translation.override(worker_language):  # a Celery worker runs in LANGUAGE_CODE; a request in the reader's
        message, _ = emails.build_message(template=template(language=language), lead=lead, to=lead.email,
                                          delivery_id=5)
    html = message.alternatives[0][0]
    assert footer in message.body and footer in html
    assert f"{unsubscribe}:" in message.body and f">{unsubscribe}</a>" in html
