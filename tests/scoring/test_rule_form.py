"""The rule inline speaks the marketer's language: fields and operators in words, values as
a Brazilian types them ("20.000" is twenty thousand), and stored values shown back the same
way. The API and the rules files keep speaking JSON (test_api.py, test_rules_files.py)."""

import pytest
from django import forms
from django.urls import reverse
from django.utils import translation

from scoring import forms as rule_forms
from scoring.admin import rule_summary, sample_why
from scoring.engine import Verdict
from scoring.models import Rule, Ruleset
from tests.config.test_i18n import _restore_language  # noqa: F401 (autouse)

from ..factories import LeadFactory
from .factories import pallet_ruleset, reason
from .test_admin import change_url, inline_errors, ruleset_post_data

PORTUGUESE = {"HTTP_ACCEPT_LANGUAGE": "pt-BR"}
ENGLISH = {"HTTP_ACCEPT_LANGUAGE": "en"}


def save_rules(client, rules, **language):
    draft = Ruleset.objects.create(name="Paletes SP")
    response = client.post(change_url(draft), ruleset_post_data(draft, rules), **language)
    return draft, response


# --- Numbers as a Brazilian types them -------------------------------------------------------


@pytest.mark.django_db
def test_a_brazilian_marketer_types_twenty_thousand_and_gets_twenty_thousand(admin_client):
    no_budget = reason("no_budget", "Sem orçamento agora")
    draft, response = save_rules(admin_client, [
        {"field": "budget", "operator": "gte", "value": "20.000"},
        {"field": "budget", "operator": "gte", "value": "20.000,50"},
        {"field": "budget", "operator": "lt", "value": "R$ 5.000", "effect": "disqualified", "reason": no_budget.pk},
        {"field": "budget", "operator": "gte", "value": "20k"},
        {"field": "budget", "operator": "gte", "value": "5000"},
        {"field": "budget", "operator": "between", "value": "5.000, 20.000"},
        {"field": "budget", "operator": "between", "value": "R$ 5 mil a R$ 20 mil"},
        {"field": "company_size", "operator": "gte", "value": "1.000"},
        {"field": "email_clicks", "operator": "between", "value": "[1, 5]", "window_days": 14},
        {"field": "attributes.frota", "operator": "gt", "value": "2,5"},
    ], **PORTUGUESE)
    assert response.status_code == 302, inline_errors(response)
    assert list(draft.rules.order_by("order").values_list("value", flat=True)) == [
        20000, 20000.5, 5000, 20000, 5000, [5000, 20000], [5000, 20000], 1000, [1, 5], 2.5,
    ]
    # Shown back as the reader writes numbers, in either language.
    page = admin_client.get(change_url(draft), **PORTUGUESE).content.decode()
    for shown in ["20.000", "20.000,5", "5.000", "5.000; 20.000", "1.000", "1; 5", "2,5"]:
        assert f'value="{shown}"' in page, shown
    page = admin_client.get(change_url(draft), **ENGLISH).content.decode()
    for shown in ["20,000", "20,000.5", "5,000; 20,000", "2.5"]:
        assert f'value="{shown}"' in page, shown


@pytest.mark.django_db
def test_a_rule_saved_unchanged_keeps_its_value(admin_client):
    """Saving the page again stores what is shown, even a value the box shows rounded."""
    draft = pallet_ruleset()
    Rule.objects.filter(ruleset=draft, field="budget").update(value=0.125)
    page = admin_client.get(change_url(draft), **PORTUGUESE)
    formset = page.context["inline_admin_formsets"][0].formset
    data = ruleset_post_data(draft, [])
    data.update({"rules-TOTAL_FORMS": len(formset.forms), "rules-INITIAL_FORMS": len(formset.forms)})
    for form in formset.forms:
        for name, field in form.fields.items():
            value = form[name].value()
            if isinstance(field.widget, forms.MultiWidget):
                value = field.widget.decompress(value) if not isinstance(value, list) else value
                data.update({f"{form.prefix}-{name}_{i}": part for i, part in enumerate(value)})
            elif isinstance(value, bool):
                if value:
                    data[f"{form.prefix}-{name}"] = "on"
            elif value is not None:
                data[f"{form.prefix}-{name}"] = value
    before = list(draft.rules.order_by("order").values_list("value", flat=True))
    response = admin_client.post(change_url(draft), data, **PORTUGUESE)
    assert response.status_code == 302, inline_errors(response)
    assert list(draft.rules.order_by("order").values_list("value", flat=True)) == before


@pytest.mark.django_db
@pytest.mark.parametrize(("language", "rule", "message"), [
    # "1,500" is one and a half to a Brazilian and fifteen hundred to an American: ask.
    (ENGLISH, {"field": "budget", "operator": "gte", "value": "20.000"},
     "“20.000” can be read two ways: write 20000 or 20."),
    (ENGLISH, {"field": "budget", "operator": "gte", "value": "R$ 1.500"},
     "“R$ 1.500” can be read two ways: write R$ 1500 or R$ 1.5."),
    (PORTUGUESE, {"field": "budget", "operator": "gte", "value": "1,500"}, "“1,500”"),
    (ENGLISH, {"field": "budget", "operator": "gte", "value": "1.00.000"}, "“1.00.000” is not a number"),
    (ENGLISH, {"field": "budget", "operator": "gte", "value": "vinte mil"},
     "“vinte mil” is not a number. Write it as in: 20,000 · 20,000.50 · R$\u00a020,000 · 20k."),
    (ENGLISH, {"field": "budget", "operator": "gte", "value": "0,125"}, "“0,125” has more than two decimals."),
    (ENGLISH, {"field": "budget", "operator": "between", "value": "5000,20000"},
     "Is “5000,20000” one number or several?"),
    (ENGLISH, {"field": "budget", "operator": "in", "value": "5000 20000"}, "Is “5000 20000” one number or several?"),
    (ENGLISH, {"field": "budget", "operator": "between", "value": "5000"}, "Give two numbers"),
    (ENGLISH, {"field": "company_size", "operator": "gte", "value": "2.5"}, "Give a whole number, not 2.5."),
    (ENGLISH, {"field": "email_clicks", "operator": "gte", "value": "1,5"}, "Give a whole number, not 1,5."),
])
def test_an_ambiguous_or_unreadable_number_is_refused_with_what_to_write(admin_client, language, rule, message):
    draft, response = save_rules(admin_client, [rule], **language)
    assert response.status_code == 200
    errors = inline_errors(response)[0]
    assert list(errors) == ["value"], errors
    assert len(errors["value"]) == 1, errors  # said once, not again by Rule.clean
    assert message in errors["value"][0]
    assert not draft.rules.exists()


@pytest.mark.parametrize("language", ["pt-br", "en"])
@pytest.mark.parametrize(("field", "operator", "value"), [
    ("budget", "gte", 20000), ("budget", "gte", 20000.5), ("budget", "lt", 1500), ("budget", "gte", -5),
    ("budget", "between", [5000, 20000]), ("budget", "in", [1000, 2500.75]), ("company_size", "gte", 1000000),
    ("email_opens", "gte", 2), ("attributes.frota", "lte", 12.5), ("state", "in", ["SP", "RJ"]),
    ("state", "not_in", ["SP"]), ("city", "in", ["Rio, RJ", "São Paulo"]), ("interest", "contains", "palete"),
    ("interest", "equals", "[sob medida]"), ("state", "is_empty", None), ("job_title", "matches", "^(diretor|ceo)"),
    ("email", "email_domain_in", ["gmail.com", "hotmail.com"]), ("attributes.segmento", "in", ["varejo"]),
])
def test_what_the_form_shows_reads_back_as_the_same_value(language, field, operator, value):
    with translation.override(language):
        shown = rule_forms.show_value(value, field, operator)
        assert rule_forms.read_value(shown, field, operator) == value, shown


@pytest.mark.parametrize(("field", "operator", "typed", "value"), [
    ("state", "in", "SP, RJ", ["SP", "RJ"]),
    ("state", "in", "SP,RJ ,  MG,", ["SP", "RJ", "MG"]),
    ("state", "in", '["SP", "RJ"]', ["SP", "RJ"]),
    ("job_title", "contains_any", "diretor, gerente, sócio", ["diretor", "gerente", "sócio"]),
    ("email", "email_domain_in", "gmail.com, hotmail.com", ["gmail.com", "hotmail.com"]),
    ("city", "not_in", '"Rio, RJ", Niterói', ["Rio, RJ", "Niterói"]),
    ("interest", "contains", "palete", "palete"),
    ("interest", "contains", '"palete"', "palete"),
    ("interest", "not_contains", "  madeira  ", "madeira"),
    ("job_title", "matches", "[Dd]iretor", "[Dd]iretor"),
    ("state", "is_empty", "", None),
    ("budget", "between", "[20.000, 30.000]", [20000, 30000]),
    ("budget", "between", "5.000; 20.000,50", [5000, 20000.5]),
    ("budget", "between", "5000 – 20000", [5000, 20000]),
    ("budget", "gte", "5,5 mil", 5500),
])
def test_lists_need_no_json_and_text_no_quotes(field, operator, typed, value):
    with translation.override("pt-br"):
        assert rule_forms.read_value(typed, field, operator) == value


# --- Fields and operators in words -----------------------------------------------------------


@pytest.mark.django_db
def test_the_field_is_picked_from_a_list_in_words_and_operators_read_as_words(admin_client):
    draft = pallet_ruleset()
    page = admin_client.get(change_url(draft)).content.decode()
    assert '<select name="rules-0-field_0"' in page
    assert '<option value="state" selected>State (UF)</option>' in page
    assert '<option value="company_size" selected>Company size</option>' in page
    assert '<option value="email_clicks">Email clicks</option>' in page
    assert '<option value="attributes.">Custom field: type its key</option>' in page
    assert '<option value="not_in" selected>is not one of</option>' in page
    assert '<option value="contains_any" selected>contains any of</option>' in page
    assert '<option value="gte" selected>is at least</option>' in page
    assert ">not_in<" not in page.replace("<code>not_in</code>", "")  # the code only in the help, for files
    assert 'name="rules-0-value" value="SP"' in page
    assert 'name="rules-3-value" value="diretor, gerente, sócio, ceo"' in page
    portuguese = admin_client.get(change_url(draft), **PORTUGUESE).content.decode()
    assert '<option value="state" selected>Estado (UF)</option>' in portuguese
    assert '<option value="not_in" selected>não é nenhum de</option>' in portuguese
    # An active ruleset's rules, read-only, in the same words.
    active = pallet_ruleset(state=Ruleset.State.ACTIVE)
    read_only = admin_client.get(change_url(active), **PORTUGUESE).content.decode()
    for shown in ["Estado (UF)", "não é nenhum de", "SP", "Orçamento", "5.000", "diretor, gerente, sócio, ceo"]:
        assert f'<div class="readonly">{shown}</div>' in read_only, shown
    assert "job_title" not in read_only and "[&quot;SP&quot;]" not in read_only


@pytest.mark.django_db
def test_a_custom_field_is_picked_and_its_key_typed_beside_it(admin_client):
    draft = Ruleset.objects.create(name="Paletes SP")
    data = ruleset_post_data(draft, [{"operator": "gte", "value": "10"}, {"operator": "gte", "value": "10"}])
    data.update({"rules-0-field_0": "attributes.", "rules-0-field_1": "frota",
                 "rules-1-field_0": "submissions", "rules-1-field_1": "ignored"})
    response = admin_client.post(change_url(draft), data)
    assert response.status_code == 302, inline_errors(response)
    assert list(draft.rules.order_by("order").values_list("field", flat=True)) == ["attributes.frota", "submissions"]
    page = admin_client.get(change_url(draft)).content.decode()
    assert '<option value="attributes." selected>' in page
    assert 'name="rules-0-field_1" value="frota"' in page
    # The key box shows only for a custom field.
    key_boxes = [chunk.split(">")[0] for chunk in page.split('<input type="text" name="rules-')[1:]
                 if chunk.split('"')[0].endswith("field_1")]
    assert ["hidden" in box for box in key_boxes] == [False, True, True]  # and the blank row "Add another" copies

    data["rules-0-field_1"] = "  "
    response = admin_client.post(change_url(draft), data)
    assert inline_errors(response)[0] == {"field": ["Type the custom field's key."]}


# --- The impact page in words ----------------------------------------------------------------


@pytest.mark.django_db
def test_the_impact_page_says_the_rules_in_words_and_engagement_in_the_readers_language(admin_client):
    LeadFactory(state="SP", interest="paletes", job_title="Diretor", company_size=80)
    LeadFactory(state="RJ", interest="paletes")
    draft = pallet_ruleset(submission_points=5)
    Rule.objects.create(ruleset=draft, order=9, name="Clicou", field="email_clicks", operator="gte", value=2,
                        window_days=14, points=10)
    url = reverse("admin:scoring_ruleset_impact", args=[draft.pk])
    page = admin_client.get(url, **ENGLISH)
    content = page.content.decode()
    assert "<td>State (UF) is not one of SP</td>" in content
    assert "<td>Budget is less than 5,000</td>" in content
    assert "<td>Email clicks in the last 14 days is at least 2</td>" in content
    assert "<td>not_in</td>" not in content and "<td>state</td>" not in content
    whys = [sample["why"] + " · " + sample["points"] for move in page.context["samples"] for sample in move["leads"]]
    assert any("Fora de SP (State (UF): RJ)" in why for why in whys), whys
    assert any("Recent engagement +5" in why for why in whys), whys
    content = admin_client.get(url, **PORTUGUESE).content.decode()
    assert "<td>Estado (UF) não é nenhum de SP</td>" in content
    assert "<td>Orçamento é menor que 5.000</td>" in content
    assert "Engajamento recente +5" in content
    assert "engagement +" not in content


@pytest.mark.django_db
def test_a_sample_reads_its_engagement_and_its_knock_out_in_words(settings):
    lead = LeadFactory(state="RJ", budget=900)
    ruleset = pallet_ruleset()
    verdict = Verdict(status="disqualified", reason="no_budget", score=5, temperature="cold", explanation=[
        {"rule": 3, "name": "Sem orçamento", "field": "budget", "operator": "lt", "value": 5000,
         "effect": "disqualified", "points": 0, "reason": "no_budget", "seen": "900.00"},
        {"rule": None, "name": "engagement", "effect": "points", "points": 5, "seen": 4.6},
    ])
    with translation.override("pt-br"):
        sample = sample_why(lead, verdict, ruleset)
        assert sample["why"] == "Sem orçamento (Orçamento: 900) → Sem orçamento agora"
        assert sample["points"] == "Engajamento recente +5"
        rule = ruleset.rules.get(name="Decisor")
        assert rule_summary(rule)["criterion"] == "Cargo contém algum de diretor, gerente, sócio, ceo"
