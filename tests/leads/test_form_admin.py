import html
import re

import pytest

from leads.embed import snippet
from leads.models import Submission

from ..factories import FormFactory

pytestmark = pytest.mark.django_db


def test_the_embed_snippet_posts_every_accepted_field_to_the_forms_endpoint():
    form = FormFactory(fields=["email", "name", "phone", "frota"], required_fields=["email"],
                       consent_text="Aceito", consent_required=True)
    html = snippet(form)
    assert 'action="http://127.0.0.1:8000/api/v1/forms/contato/submissions/"' in html
    for name in ("email", "name", "phone", "frota", "consent", "website", "utm_campaign"):
        assert f'name="{name}"' in html
    assert 'id="funil-email" name="email" type="email" autocomplete="email" required' in html
    assert "Idempotency-Key" in html


def test_admin_shows_the_snippet_and_replays_failed_submissions(admin_client):
    form = FormFactory(fields=["name", "email", "message", "consent"], consent_text="Aceito")
    page = admin_client.get(f"/admin/leads/form/{form.pk}/change/")
    assert page.status_code == 200
    # The whole snippet sits in its box, escaped: the message field's own </textarea> does not end it.
    box = re.search(r'onclick="this.select\(\)">(.*?)</textarea>', page.content.decode(), re.S).group(1)
    assert "<textarea" in snippet(form) and html.unescape(box) == snippet(form)
    failed = Submission.objects.create(form=form, payload={"email": "x@y.com.br"}, status=Submission.Status.FAILED)
    admin_client.post("/admin/leads/submission/", {"action": "replay", "_selected_action": [failed.pk]})
    failed.refresh_from_db()
    assert failed.status == Submission.Status.PROCESSED
    assert failed.lead.email == "x@y.com.br"


def _form_post(form, **changes):
    data = {"name": form.name, "slug": form.slug, "source": form.source_id or "", "default_interest": "",
            "active": "on", "fields": "", "required_fields": "", "honeypot_field": form.honeypot_field,
            "success_url": "", "thank_you_message": "", "consent_text": form.consent_text,
            "consent_version": form.consent_version, "allowed_origins": ""}
    data.update(changes)
    return data


def test_the_forms_fields_are_typed_as_a_list_of_names_not_json(admin_client):
    form = FormFactory(fields=["name", "email"], required_fields=["email"])
    page = admin_client.get(f"/admin/leads/form/{form.pk}/change/").content.decode()
    assert re.search(r'<textarea name="fields"[^>]*>\s*name, email</textarea>', page)
    assert "Standard fields: email, name" in page

    response = admin_client.post(f"/admin/leads/form/{form.pk}/change/", _form_post(
        form, fields="name, email\nphone;frota", required_fields="email  frota", success_url="paletes.com.br/obrigado"))
    assert response.status_code == 302
    form.refresh_from_db()
    assert form.fields == ["name", "email", "phone", "frota"] and form.required_fields == ["email", "frota"]
    assert form.success_url == "https://paletes.com.br/obrigado"

    for changes, error in (
        ({"fields": "name, e mail!"}, "Not a field name: mail!"),
        ({"fields": "name, email, name"}, "Each field may be listed once."),
        ({"fields": "name, email", "required_fields": "company"}, "Required fields must also be accepted: company."),
    ):
        response = admin_client.post(f"/admin/leads/form/{form.pk}/change/", _form_post(form, **changes))
        assert response.status_code == 200 and error in response.content.decode()
    form.refresh_from_db()
    assert form.fields == ["name", "email", "phone", "frota"]
