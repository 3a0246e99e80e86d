import re

import pytest
from django.core import mail
from django.test import Client

from nurturing.models import Sequence

from .factories import sequence, template

pytestmark = pytest.mark.django_db


@pytest.fixture
def marketer_client(marketer):
    from django.contrib.auth.models import Permission

    marketer.user_permissions.add(*Permission.objects.filter(content_type__app_label="nurturing"))
    client = Client()
    client.force_login(marketer)
    return client


def test_the_preview_renders_the_template_for_a_chosen_lead(marketer_client, make_disqualified):
    lead = make_disqualified(first_name="Joana", company="Pallets Joana")
    tpl = template()
    change = marketer_client.get(f"/admin/nurturing/emailtemplate/{tpl.pk}/change/").content.decode()
    assert f'href="/admin/nurturing/emailtemplate/{tpl.pk}/preview/" id="preview-link"' in change

    response = marketer_client.get(f"/admin/nurturing/emailtemplate/{tpl.pk}/preview/?lead={lead.pk}")

    assert response.status_code == 200
    content = response.content.decode()
    assert "Olá Joana" in content and "Pallets Joana" in content and "List-Unsubscribe" in content
    # The whole message is inside the frame's srcdoc, with or without <html><body>: its quotes escaped, so
    # a link does not end the attribute.
    for html in (tpl.html_body, '<p>Olá {{ lead.first_name }}: <a href="https://example.com/paletes">veja</a></p>'):
        tpl.html_body = html
        tpl.save()
        page = marketer_client.get(f"/admin/nurturing/emailtemplate/{tpl.pk}/preview/?lead={lead.pk}")
        srcdoc = re.search(r'<iframe sandbox="" srcdoc="([^"]*)"', page.content.decode()).group(1)
        assert "href=&quot;https://example.com/paletes" in srcdoc and "Cancelar inscrição" in srcdoc
    sample = marketer_client.get(f"/admin/nurturing/emailtemplate/{tpl.pk}/preview/?lead=999999")
    assert sample.status_code == 200 and "Ana" in sample.content.decode()


def test_a_broken_template_shows_its_error_instead_of_a_500(marketer_client):
    tpl = template(html="{% for %}")
    response = marketer_client.get(f"/admin/nurturing/emailtemplate/{tpl.pk}/preview/")
    assert response.status_code == 200 and "does not render" in response.content.decode()


def test_the_test_send_goes_to_the_marketer_with_the_headers(marketer_client, marketer, make_disqualified):
    lead = make_disqualified(first_name="Joana")
    tpl = template()
    response = marketer_client.post(f"/admin/nurturing/emailtemplate/{tpl.pk}/test-send/", {"lead": lead.pk})
    assert response.status_code == 302
    (message,) = mail.outbox
    assert message.to == [marketer.email]
    assert message.subject == "[Test] Olá Joana"
    assert message.extra_headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_the_preview_starts_empty_on_the_sample_lead_and_finds_a_lead_by_id_or_email(marketer_client,
                                                                                    make_disqualified):
    lead = make_disqualified(first_name="Joana", company="Pallets Joana", email="joana@paletes.com.br")
    tpl = template()
    url = f"/admin/nurturing/emailtemplate/{tpl.pk}/preview/"

    page = marketer_client.get(url).content.decode()
    box = re.search(r'<input [^>]*name="lead"[^>]*>', page).group(0)
    assert 'type="text"' in box and 'value=""' in box and "min=" not in box
    assert '<label for="preview-lead">Lead (id or email)</label>' in page
    assert "Ana Souza" in page and 'name="lead" value=""' in page.split("test-send")[1]

    for asked in (str(lead.pk), "joana@paletes.com.br", " JOANA@paletes.com.br "):
        page = marketer_client.get(url, {"lead": asked}).content.decode()
        assert "Olá Joana" in page and "Pallets Joana" in page, asked
        assert f'value="{asked.strip()}"' in page
        assert f'name="lead" value="{lead.pk}"' in page.split("test-send")[1]

    for asked, warning in (("ninguem@example.com", "No lead with this email"),
                           ("Joana", "id or email address; showing a sample lead")):
        page = marketer_client.get(url, {"lead": asked}).content.decode()
        assert warning in page and "Ana Souza" in page

    marketer_client.post(f"/admin/nurturing/emailtemplate/{tpl.pk}/test-send/", {"lead": "joana@paletes.com.br"})
    assert mail.outbox[-1].subject == "[Test] Olá Joana"


def test_the_sequence_admin_saves_steps_and_validates_the_window(marketer_client):
    seq = sequence(steps=((0, 0), (3, 0)))
    assert marketer_client.get(f"/admin/nurturing/sequence/{seq.pk}/change/").status_code == 200
    assert marketer_client.get("/admin/nurturing/delivery/").status_code == 200
    assert marketer_client.get("/admin/nurturing/enrollment/").status_code == 200
    bad = Sequence(name="x", slug="x", send_days=[9], send_from_hour=18, send_until_hour=8, time_zone="Mars/Base")
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as error:
        bad.full_clean()
    assert {"send_days", "send_until_hour", "time_zone"} <= set(error.value.message_dict)


def test_the_send_days_are_weekdays_to_tick_not_a_json_list(marketer_client):
    seq = sequence(steps=())
    page = marketer_client.get(f"/admin/nurturing/sequence/{seq.pk}/change/", HTTP_ACCEPT_LANGUAGE="pt-BR")
    body = page.content.decode()
    assert 'type="checkbox" name="send_days" value="5"' in body and "Sábado" in body
    form = {"name": seq.name, "slug": seq.slug, "segment": "", "active": "on", "send_days": ["4", "0", "2"],
            "send_from_hour": "9", "send_until_hour": "17", "time_zone": "America/Sao_Paulo",
            "steps-TOTAL_FORMS": "0", "steps-INITIAL_FORMS": "0", "steps-MIN_NUM_FORMS": "0",
            "steps-MAX_NUM_FORMS": "1000"}
    response = marketer_client.post(f"/admin/nurturing/sequence/{seq.pk}/change/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    seq.refresh_from_db()
    assert seq.send_days == [0, 2, 4] and (seq.send_from_hour, seq.send_until_hour) == (9, 17)

    response = marketer_client.post(f"/admin/nurturing/sequence/{seq.pk}/change/", {**form, "send_days": []})
    assert response.status_code == 200 and "Tick at least one weekday." in response.content.decode()
    seq.refresh_from_db()
    assert seq.send_days == [0, 2, 4]


def test_a_segments_page_counts_its_leads_now_and_opens_them_in_the_inbox(marketer_client, make_disqualified):
    from .factories import disqualified_segment

    make_disqualified(first_name="Joana")
    make_disqualified(first_name="Bia")
    segment = disqualified_segment()
    body = marketer_client.get(f"/admin/nurturing/segment/{segment.pk}/change/").content.decode()
    assert re.search(r'2 · <a href="/leads/\?status=disqualified">see them in the inbox</a>', body)
    add = marketer_client.get("/admin/nurturing/segment/add/").content.decode()
    assert "Save this view as" in add


def test_a_segments_page_says_who_is_in_it_in_words(marketer_client, rep):
    from leads.models import Reason
    from nurturing.models import Segment

    from ..factories import SourceFactory

    SourceFactory(slug="feira", name="Feira de logística")
    Reason.objects.update_or_create(slug="no_budget", defaults={"label": "Sem orçamento agora", "kind": "disqualified"})
    segment = Segment.objects.create(name="Sem verba, recentes", slug="sem-verba", filters={
        "status": ["disqualified", "out_of_focus"], "reason": "no_budget", "source": "feira", "owner": str(rep.pk),
        "created_within_days": "90", "q": "paletes", "temperature": "warm"})
    body = marketer_client.get(f"/admin/nurturing/segment/{segment.pk}/change/").content.decode()
    assert ("Status: Disqualified or Out of focus<br>Temperature: Warm<br>Owner: Rita Rep<br>"
            "Source: Feira de logística<br>Reason: Sem orçamento agora<br>Created in the last … days: 90<br>"
            "Search name, email, company, phone: “paletes”") in body
    everyone = Segment.objects.create(name="Todos", slug="todos", filters={})
    assert "Every lead (no filter)." in marketer_client.get(
        f"/admin/nurturing/segment/{everyone.pk}/change/").content.decode()
