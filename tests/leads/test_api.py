"""The authenticated API (/api/v1/leads/, /api/v1/forms/) with DRF tokens, and the
public endpoint's answers to hostile input."""

import csv
import io
import json
from decimal import Decimal
from html.parser import HTMLParser

import pytest
from django.core.management import call_command
from rest_framework.authtoken.models import Token

from leads import services
from leads.embed import snippet
from leads.models import Form, Lead, LeadEvent, Reason, Submission

from ..factories import FormFactory, LeadFactory, ReasonFactory, SourceFactory

pytestmark = pytest.mark.django_db


def token_client(client, user):
    client.defaults["HTTP_AUTHORIZATION"] = f"Token {Token.objects.get_or_create(user=user)[0].key}"
    return client


def post(client, url, body):
    return client.post(url, data=json.dumps(body), content_type="application/json")


def patch(client, url, body):
    return client.patch(url, data=json.dumps(body), content_type="application/json")


def test_anonymous_requests_get_401_and_drf_create_token_makes_a_working_token(client, manager):
    for url in ("/api/v1/leads/", "/api/v1/forms/", "/api/v1/leads/export.csv"):
        response = client.get(url)
        assert response.status_code == 401, url
        assert response["WWW-Authenticate"] == "Token"
    out = io.StringIO()
    call_command("drf_create_token", "manager", stdout=out)
    key = out.getvalue().split()[2]
    assert client.get("/api/v1/leads/", HTTP_AUTHORIZATION=f"Token {key}").status_code == 200
    assert client.get("/api/v1/leads/", HTTP_AUTHORIZATION="Token wrong").status_code == 401


# --- Forms, for marketers -------------------------------------------------------------


def test_a_marketer_manages_forms_through_the_api_with_a_token(client, marketer):
    api = token_client(client, marketer)
    SourceFactory(slug="newsletter", name="Newsletter")
    response = post(api, "/api/v1/forms/", {
        "slug": "news", "name": "Newsletter", "source": "newsletter", "fields": ["email", "name", "setor"],
        "required_fields": ["email"], "allowed_origins": ["https://WWW.Exemplo.com.br:443/"],
        "consent_text": "Aceito receber a newsletter.", "consent_version": "2026-01", "consent_required": True,
    })
    assert response.status_code == 201, response.content
    assert response["Location"] == "/api/v1/forms/news/"
    body = response.json()
    assert body["allowed_origins"] == ["https://www.exemplo.com.br"]
    assert body["submission_url"] == "/api/v1/forms/news/submissions/"
    assert [form["slug"] for form in api.get("/api/v1/forms/").json()] == ["news"]

    response = patch(api, "/api/v1/forms/news/", {"required_fields": ["telefone"]})
    assert response.status_code == 400
    assert "Required fields must also be accepted: telefone." in response.json()["errors"]["required_fields"][0]
    assert patch(api, "/api/v1/forms/news/", {"active": False}).json()["active"] is False

    response = post(api, "/api/v1/forms/", {"slug": "news", "name": "Outra", "source": "newsletter"})
    assert response.status_code == 400 and "slug" in response.json()["errors"]
    Form.objects.filter(slug="news").update(active=True)
    Submission.objects.create(form=Form.objects.get(slug="news"), payload={})
    assert api.delete("/api/v1/forms/news/").status_code == 409  # it received something: deactivate instead


def test_sales_reps_may_not_edit_forms(client, rep):
    FormFactory()
    api = token_client(client, rep)
    assert api.get("/api/v1/forms/").status_code == 200  # reps may view the catalogue
    assert post(api, "/api/v1/forms/", {"slug": "x", "name": "X", "source": "site"}).status_code == 403
    assert patch(api, "/api/v1/forms/contato/", {"name": "Y"}).status_code == 403


# --- Leads -----------------------------------------------------------------------------


@pytest.fixture
def leads(rep, other_rep):
    form = FormFactory()
    hot = LeadFactory(email="quente@x.com.br", first_name="Quente", company="Alfa Paletes", state="SP",
                      phone="+5511987654321", form=form, source=form.source)
    cold = LeadFactory(email="frio@y.com.br", first_name="Frio", company="Beta", state="RJ")
    mine = LeadFactory(email="meu@z.com.br", first_name="Meu", company="Gama", state="SP")
    Lead.objects.filter(pk=hot.pk).update(score=90, temperature="hot", status="qualified")
    Lead.objects.filter(pk=cold.pk).update(score=5)
    Lead.objects.filter(pk=mine.pk).update(score=40, owner=rep)
    return {"hot": hot, "cold": cold, "mine": mine, "form": form}


def emails(response):
    assert response.status_code == 200, response.content
    return [lead["email"] for lead in response.json()["results"]]


def test_the_lead_list_filters_searches_orders_and_pages(client, manager, leads, rep):
    api = token_client(client, manager)
    assert emails(api.get("/api/v1/leads/")) == ["quente@x.com.br", "meu@z.com.br", "frio@y.com.br"]
    assert emails(api.get("/api/v1/leads/?status=qualified")) == ["quente@x.com.br"]
    assert emails(api.get("/api/v1/leads/?state=SP&ordering=score")) == ["meu@z.com.br", "quente@x.com.br"]
    assert emails(api.get("/api/v1/leads/?owner=unassigned&score_min=1")) == ["quente@x.com.br", "frio@y.com.br"]
    assert emails(api.get(f"/api/v1/leads/?owner={rep.pk}")) == ["meu@z.com.br"]
    assert emails(api.get("/api/v1/leads/?form=contato")) == ["quente@x.com.br"]
    assert emails(api.get("/api/v1/leads/?q=alfa")) == ["quente@x.com.br"]
    assert emails(api.get("/api/v1/leads/?q=98765-4321")) == ["quente@x.com.br"]
    assert emails(api.get("/api/v1/leads/?temperature=hot")) == ["quente@x.com.br"]
    assert len(emails(api.get("/api/v1/leads/?temperature=hot&temperature=cold"))) == 3
    first = api.get("/api/v1/leads/?page_size=2").json()
    assert len(first["results"]) == 2 and first["next"]
    assert emails(api.get(first["next"])) == ["frio@y.com.br"]
    response = api.get("/api/v1/leads/?status=nope&score_min=x")
    assert response.status_code == 400 and set(response.json()["errors"]) == {"status", "score_min"}


def test_creating_through_the_api_normalises_and_merges_like_the_public_door(client, manager):
    api = token_client(client, manager)
    response = post(api, "/api/v1/leads/", {"email": " Nova@Empresa.COM.br ", "name": "Nova Pessoa",
                                            "phone": "(11) 98765-4321", "state": "são paulo", "budget": "5k",
                                            "attributes": {"setor": "agro"}})
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["email"], body["first_name"], body["phone"], body["state"], body["budget"], body["source"]) == (
        "nova@empresa.com.br", "Nova", "+5511987654321", "SP", "5000.00", "api")
    again = post(api, "/api/v1/leads/", {"email": "NOVA@empresa.com.br", "company": "Nova SA", "state": "RJ"})
    assert again.status_code == 200
    lead = Lead.objects.get()
    assert (lead.company, lead.state, lead.attributes) == ("Nova SA", "SP", {"setor": "agro"})
    response = post(api, "/api/v1/leads/", {"email": "ruim", "state": "Nárnia", "score": 100})
    assert response.status_code == 400
    assert set(response.json()["errors"]) == {"score"}  # unknown keys are refused first, by name
    response = post(api, "/api/v1/leads/", {"email": "ruim", "state": "Nárnia"})
    assert set(response.json()["errors"]) == {"email", "state"}


def test_a_rep_changes_contact_fields_of_own_leads_only(client, rep, other_rep, leads):
    api = token_client(client, rep)
    response = patch(api, f"/api/v1/leads/{leads['mine'].pk}/", {"phone": "21 99876-5432", "city": "Niterói"})
    assert response.status_code == 200, response.content
    assert (response.json()["phone"], response.json()["city"]) == ("+5521998765432", "Niterói")
    assert leads["mine"].events.filter(kind=LeadEvent.Kind.UPDATED).count() == 1
    response = patch(api, f"/api/v1/leads/{leads['mine'].pk}/", {"status": "qualified"})
    assert response.status_code == 400 and "status" in response.json()["errors"]
    Lead.objects.filter(pk=leads["cold"].pk).update(owner=other_rep)
    assert patch(api, f"/api/v1/leads/{leads['cold'].pk}/", {"city": "X"}).status_code == 403


def test_the_actions_call_the_services_and_name_what_is_missing(client, manager, leads, rep):
    ReasonFactory(slug="no_budget", kind=Reason.Kind.DISQUALIFIED)
    ReasonFactory(slug="outside", label="Fora", kind=Reason.Kind.OUT_OF_FOCUS)
    api = token_client(client, manager)
    lead = leads["cold"]
    url = f"/api/v1/leads/{lead.pk}"
    response = post(api, f"{url}/disqualify/", {"note": "sem verba"})
    assert response.status_code == 400 and response.json()["errors"] == {"reason": ["This field is required."]}
    response = post(api, f"{url}/disqualify/", {"reason": "outside"})
    assert response.status_code == 400 and "reason" in response.json()["errors"]
    response = post(api, f"{url}/disqualify/", {"reason": "no_budget", "note": "sem verba",
                                               "requalify_at": "2099-01-01T09:00:00-03:00"})
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["reason"]) == ("disqualified", "no_budget")
    assert post(api, f"{url}/out-of-focus/", {}).status_code == 400
    assert post(api, f"{url}/out-of-focus/", {"reason": "outside"}).json()["status"] == "out_of_focus"
    assert post(api, f"{url}/qualify/", {"note": "ligou"}).json()["status"] == "qualified"
    assert post(api, f"{url}/assign/", {"owner": rep.pk}).json()["owner"] == "rep"
    assert post(api, f"{url}/notes/", {"text": "retornar amanhã"}).status_code == 201
    converted = post(api, f"{url}/convert/", {"deal_value": "15000.00"}).json()
    assert (converted["status"], converted["deal_value"]) == ("converted", "15000.00")
    events = api.get(f"{url}/events/").json()["results"]
    assert [event["kind"] for event in events][:6] == [
        "status_changed", "note", "assigned", "status_changed", "status_changed", "status_changed"]
    lead.refresh_from_db()
    assert (lead.status_set_by, lead.deal_value) == ("person", Decimal("15000.00"))


def test_a_rep_may_claim_an_unassigned_lead_but_not_act_on_another_reps(client, rep, other_rep, leads):
    api = token_client(client, rep)
    assert post(api, f"/api/v1/leads/{leads['hot'].pk}/assign/", {"owner": rep.pk}).status_code == 200
    assert post(api, f"/api/v1/leads/{leads['cold'].pk}/assign/", {"owner": other_rep.pk}).status_code == 403
    services.lead_assign(lead=leads["cold"], owner=other_rep)
    assert post(api, f"/api/v1/leads/{leads['cold'].pk}/qualify/", {}).status_code == 403
    assert post(api, "/api/v1/leads/", {"email": "x@y.com.br"}).status_code == 403  # reps do not add leads


def test_a_marketer_reads_but_does_not_change_leads(client, marketer, leads):
    api = token_client(client, marketer)
    assert api.get(f"/api/v1/leads/{leads['hot'].pk}/").status_code == 200
    assert post(api, f"/api/v1/leads/{leads['hot'].pk}/qualify/", {}).status_code == 403


def test_the_csv_export_has_every_lead_of_the_filtered_list(client, manager, leads):
    api = token_client(client, manager)
    LeadFactory(email="=cmd@evil.com.br", company="=HYPERLINK(\"x\")", state="SP")
    response = api.get("/api/v1/leads/export.csv?state=SP&ordering=-score")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="leads-')
    text = b"".join(response.streaming_content).decode("utf-8")
    assert text.startswith("\ufeff")
    rows = list(csv.DictReader(io.StringIO(text[1:])))
    assert [row["email"] for row in rows] == ["quente@x.com.br", "meu@z.com.br", "'=cmd@evil.com.br"]
    assert rows[0]["phone"] == "+5511987654321" and rows[0]["form"] == "contato"
    assert rows[2]["company"] == "'=HYPERLINK(\"x\")"  # a spreadsheet will not run it


def test_the_csv_export_for_a_brazilian_spreadsheet_uses_semicolons_and_a_decimal_comma(client, manager, leads):
    from decimal import Decimal

    api = token_client(client, manager)
    LeadFactory(email="verba@cliente.com.br", company="Paletes; Caixas", budget=Decimal("12500.50"), state="SP")
    text = b"".join(api.get("/api/v1/leads/export.csv?state=SP&dialect=spreadsheet",
                            HTTP_ACCEPT_LANGUAGE="pt-BR").streaming_content).decode("utf-8")
    assert text.startswith("\ufeffid;created_at;status;")
    rows = {row["email"]: row for row in csv.DictReader(io.StringIO(text[1:]), delimiter=";")}
    assert rows["verba@cliente.com.br"]["budget"] == "12500,50"
    assert rows["verba@cliente.com.br"]["company"] == "Paletes; Caixas"  # quoted, one cell
    # For programs (the default), and for an English spreadsheet: commas and a decimal point.
    for query, language in (("", "pt-BR"), ("&dialect=spreadsheet", "en")):
        text = b"".join(api.get(f"/api/v1/leads/export.csv?state=SP{query}",
                                HTTP_ACCEPT_LANGUAGE=language).streaming_content).decode("utf-8")
        rows = {row["email"]: row for row in csv.DictReader(io.StringIO(text[1:]))}
        assert rows["verba@cliente.com.br"]["budget"] == "12500.50"
    response = api.get("/api/v1/leads/export.csv?dialect=excel")
    assert response.status_code == 400
    assert response.json()["errors"]["dialect"] == ["Choose one of: standard, spreadsheet."]


# --- OpenAPI docs ------------------------------------------------------------------------


def test_the_docs_page_serves_swagger_from_the_app_not_a_cdn(client, settings):
    page = client.get("/api/docs/").content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in page
    assert "cdn" not in page.lower() and "https://" not in page
    from django.contrib.staticfiles import finders

    assert finders.find("drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")
    assert client.get("/api/schema/").status_code == 200


# --- The public endpoint: hostile input never gets a 500 ----------------------------------

URL = "/api/v1/forms/contato/submissions/"


@pytest.fixture
def form(db):
    return FormFactory(fields=["email", "name", "phone", "company", "budget", "company_size", "frota"])


@pytest.mark.parametrize(("body", "content_type"), [
    (b"\xff\xfe\x00{not utf-8", "application/json"),
    (b'{"email": "a@b.com.br", "name": "\xe9"}', "application/json"),  # latin-1 inside "JSON"
    (b"[1, 2, 3]", "application/json"),
    (b'"just a string"', "application/json"),
    (b"null", "application/json"),
    (b"", "application/json"),
    (b"--xx\r\nbroken multipart", "multipart/form-data; boundary=xx"),
    (b"{}", "multipart/form-data"),  # no boundary
    (b"<xml/>", "application/xml"),
])
def test_bodies_that_are_not_what_they_claim_get_a_4xx_never_a_500(client, form, body, content_type):
    response = client.generic("POST", URL, body, content_type=content_type, HTTP_ACCEPT="application/json")
    assert 400 <= response.status_code < 500, response.content
    assert response.status_code != 404
    if response.status_code != 415:  # a body of a type no form sends is not a submission
        assert Submission.objects.count() == 1  # kept, with what could be read of it


def test_a_form_post_that_is_not_utf8_is_still_accepted(client, form):
    response = client.generic("POST", URL, b"email=a%40b.com.br&name=Jos\xe9", content_type=
                              "application/x-www-form-urlencoded", HTTP_ACCEPT="application/json")
    assert response.status_code == 202
    assert Lead.objects.get().first_name.startswith("Jos")


@pytest.mark.parametrize("payload", [
    {"email": "a@b.com.br", "budget": 10 ** 400},
    {"email": "a@b.com.br", "budget": 1e308, "company_size": 10 ** 30},
    {"email": "a@b.com.br", "budget": "9" * 5000},
    {"email": "a@b.com.br", "budget": "NaN"},
    {"email": "a@b.com.br", "budget": "Infinity", "company_size": -5},
    {"email": {"nested": {"deep": ["a@b.com.br"]}}},
    {"email": ["a@b.com.br", "c@d.com.br"], "name": ["Ana", {"x": 1}]},
    {"email": "a@b.com.br", "frota": {"caminhoes": 3}},
    {"email": "a@b.com.br", "phone": 11987654321, "company": 12.5, "name": True},
    {"email": "a@b.com.br\u0000", "name": "\u0000\ud800"},
    {"email": "x" * 300 + "@b.com.br"},
    {"email": "a@" + "b" * 70 + ".com"},
])
def test_odd_json_values_get_a_400_naming_the_field_or_are_accepted_never_a_500(client, form, payload):
    body = json.dumps(payload)
    response = client.post(URL, data=body, content_type="application/json")
    assert response.status_code in (202, 400), response.content
    if response.status_code == 400:
        assert response.json()["errors"]
    assert Submission.objects.count() == 1  # stored whatever it was


def test_deeply_nested_json_is_refused_cleanly(client, form):
    body = '{"email": ' + "[" * 100000 + "]" * 100000 + "}"
    response = client.post(URL, data=body, content_type="application/json", HTTP_ACCEPT="application/json")
    assert response.status_code in (400, 413)


# --- The embed snippet, posted as a browser would ------------------------------------------


class SnippetForm(HTMLParser):
    """What a browser sees in the snippet: the form's action and its named inputs."""

    def __init__(self):
        super().__init__()
        self.action = self.method = None
        self.inputs = {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.action, self.method = attrs["action"], attrs["method"]
        elif tag in ("input", "textarea") and attrs.get("name"):
            self.inputs[attrs["name"]] = attrs


def test_the_snippet_posts_like_a_browser_with_and_without_javascript(client, settings):
    settings.FUNIL_BASE_URL = "https://funil.example.com"
    form = FormFactory(fields=["email", "name", "phone", "message", "frota"], required_fields=["email"],
                       consent_text="Aceito <contato>", consent_version="v9", consent_required=True,
                       success_url="https://loja.example.com/obrigado")
    html = snippet(form)
    assert "Aceito &lt;contato&gt;" in html  # the marketer's text is shown, not parsed as markup
    parsed = SnippetForm()
    parsed.feed(html)
    assert (parsed.action, parsed.method) == ("https://funil.example.com/api/v1/forms/contato/submissions/", "post")
    path = parsed.action.removeprefix("https://funil.example.com")
    typed = {"email": "Pessoa@Loja.com.br", "name": "Pessoa Um", "phone": "11 98765-4321", "message": "Olá",
             "frota": "12"}
    # JavaScript off: the browser sends every named input, urlencoded (the honeypot and UTM fields empty).
    data = {name: typed.get(name, "") for name in parsed.inputs if parsed.inputs[name].get("type") != "checkbox"}
    data["consent"] = parsed.inputs["consent"]["value"]
    assert set(data) >= {"website", "utm_source", "utm_campaign", "consent"}
    response = client.post(path, data=data)
    assert (response.status_code, response["Location"]) == (303, "https://loja.example.com/obrigado")
    lead = Lead.objects.get()
    assert (lead.email, lead.first_name, lead.attributes, lead.consents.get().version) == (
        "pessoa@loja.com.br", "Pessoa", {"frota": "12"}, "v9")
    # JavaScript on: the script posts the same fields as JSON with an Idempotency-Key.
    assert '"Content-Type": "application/json", "Accept": "application/json", "Idempotency-Key": key' in html
    data.update(email="dois@loja.com.br", consent="on")
    response = client.post(path, data=json.dumps(data), content_type="application/json",
                           HTTP_ACCEPT="application/json", HTTP_IDEMPOTENCY_KEY="k-1", HTTP_ORIGIN="https://x.org")
    assert response.status_code == 202 and set(response.json()) == {"submission"}
    assert Lead.objects.count() == 2
    # A double click sends the same key: one lead.
    again = client.post(path, data=json.dumps(data), content_type="application/json",
                        HTTP_ACCEPT="application/json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert again.json() == response.json() and Lead.objects.count() == 2
    # Without consent the script gets the field named, to show beside the checkbox.
    data.update(email="tres@loja.com.br", consent="")
    refused = client.post(path, data=json.dumps(data), content_type="application/json",
                          HTTP_ACCEPT="application/json", HTTP_IDEMPOTENCY_KEY="k-2")
    assert refused.status_code == 400 and refused.json()["errors"] == {"consent": ["Consent is required."]}


def test_the_script_takes_a_new_idempotency_key_after_a_refusal():
    """After a 400 the person fixes the form and sends again: that is a new submission,
    so it must not reuse the key whose first answer was the refusal."""
    form = FormFactory()
    html = snippet(form)
    script = html[html.index("<script>"):]
    assert "var key = newKey();" in script
    assert "key = newKey();  // the corrected form is a new submission" in script
