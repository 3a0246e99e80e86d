"""The four examples of DOMAIN.md ("The articles' own examples"), end to end.

Each company's marketer writes the rules file they would write, imports and activates
it (the activation job runs), and a lead arrives through the public form endpoint
``POST /api/v1/forms/<slug>/submissions/``. The lead gets the article's outcome, with
the reason and an explanation that names the rule that decided and the value it saw; a
lead that fits comes out qualified. Rescoring in the database afterwards changes
nothing: the SQL twin agrees with the verdict given at capture.

A new lead is scored before it is inserted, so the explanation of its first verdict is
on its first status event (new -> ...); each later submission writes a 'scored' event
with the explanation of its new verdict.
"""

import json

import pytest

from leads.models import Form, Lead, LeadEvent, Source
from scoring import services
from scoring.models import RescoreJob
from scoring.rules_io import ruleset_import

pytestmark = pytest.mark.django_db

CONTACT = ["email", "name", "phone", "company", "job_title", "company_size", "state", "city", "interest", "budget"]


def company(rules_file, *, form, fields=CONTACT, source="site"):
    """The company's rules, imported and activated (the activation job run), and its form."""
    ruleset = ruleset_import(rules_file)
    job = services.ruleset_activate(ruleset=ruleset)
    assert services.rescore_job_run(job_id=job.pk).status == RescoreJob.Status.DONE
    source, _ = Source.objects.get_or_create(slug=source, defaults={"name": source})
    Form.objects.create(slug=form, name=form, source=source, fields=fields)
    return ruleset


def submit(client, form, **payload):
    response = client.post(f"/api/v1/forms/{form}/submissions/", data=json.dumps(payload),
                           content_type="application/json")
    assert response.status_code == 202, response.content
    return Lead.objects.get(email=payload["email"])


def capture_explanation(lead):
    return lead.events.get(kind=LeadEvent.Kind.STATUS_CHANGED, from_status="new").data["explanation"]


def line(explanation, rule_name):
    [found] = [item for item in explanation if item["name"] == rule_name]
    return found


def assert_decided_by(lead, rule_name, *, effect, reason, seen):
    """The verdict's explanation names the rule that decided, its effect and the value it saw."""
    decided = line(capture_explanation(lead), rule_name)
    assert (decided["effect"], decided["reason"], decided["seen"]) == (effect, reason, seen)


def assert_rescoring_changes_nothing(ruleset, *leads):
    before = [(lead.status, lead.reason_id, lead.score, lead.temperature) for lead in leads]
    job = services.rescore_job_run(job_id=services.rescore_job_create(ruleset=ruleset).pk)
    assert (job.status, job.leads_changed) == (RescoreJob.Status.DONE, 0)
    for lead in leads:
        lead.refresh_from_db()
    assert [(lead.status, lead.reason_id, lead.score, lead.temperature) for lead in leads] == before


# --- 1. The sports shop that sells light sports trousers, not jeans ---------------------------------

SPORTS_SHOP = {
    "name": "Esporte Leve",
    "description": "Loja de artigos esportivos: calças esportivas leves, não jeans.",
    "thresholds": {"qualify": 30, "warm": 30, "hot": 60},
    "engagement_half_life_days": 30,
    "engagement_points": {"submission": 5, "email_open": 1, "email_click": 3},
    "reasons": {"wrong_product_line": "Procura uma linha que não vendemos"},
    "rules": [
        {"name": "Quer jeans", "field": "interest", "operator": "contains_any", "value": ["jeans", "denim"],
         "effect": "disqualified", "reason": "wrong_product_line"},
        {"name": "Calças esportivas", "field": "interest", "operator": "contains_any",
         "value": ["calça esportiva", "calça leve", "legging", "jogger", "corrida", "treino"],
         "effect": "points", "points": 30},
        {"name": "Pratica esporte", "field": "attributes.esporte", "operator": "is_not_empty", "value": None,
         "effect": "points", "points": 20},
    ],
}
NEWSLETTER = ["email", "name", "interest", "esporte"]


def test_sports_shop_a_lead_after_jeans_promotions_is_disqualified_for_the_wrong_line(client):
    ruleset = company(SPORTS_SHOP, form="newsletter-promocoes", fields=NEWSLETTER, source="newsletter")
    lead = submit(client, "newsletter-promocoes", email="bruna@corre.com.br", name="Bruna Lima",
                  interest="Promoções de CALÇA JEANS", esporte="Corrida")
    # Right profile (she runs), wrong line: 20 for the sport + 5 for the sign-up.
    assert (lead.status, lead.reason.slug, lead.score, lead.temperature) == (
        "disqualified", "wrong_product_line", 25, "cold")
    assert_decided_by(lead, "Quer jeans", effect="disqualified", reason="wrong_product_line",
                      seen="Promoções de CALÇA JEANS")
    assert line(capture_explanation(lead), "Pratica esporte")["seen"] == "Corrida"

    # She signs up again: the rules say the same, and the 'scored' event says why.
    lead = submit(client, "newsletter-promocoes", email="bruna@corre.com.br", interest="jeans skinny")
    assert (lead.status, lead.reason.slug) == ("disqualified", "wrong_product_line")
    scored = lead.events.get(kind=LeadEvent.Kind.SCORED)
    assert line(scored.data["explanation"], "Quer jeans")["seen"] == "Promoções de CALÇA JEANS"
    assert_rescoring_changes_nothing(ruleset, lead)


def test_sports_shop_a_runner_after_light_trousers_is_qualified(client):
    ruleset = company(SPORTS_SHOP, form="newsletter-promocoes", fields=NEWSLETTER, source="newsletter")
    lead = submit(client, "newsletter-promocoes", email="caio@corre.com.br", name="Caio",
                  interest="Calca esportiva leve para treino", esporte="corrida")
    assert (lead.status, lead.reason, lead.score, lead.temperature) == ("qualified", None, 55, "warm")
    assert line(capture_explanation(lead), "Calças esportivas")["seen"] == "Calca esportiva leve para treino"
    assert_rescoring_changes_nothing(ruleset, lead)


# --- 2. Industrial equipment maintenance -----------------------------------------------------------

MAINTENANCE = {
    "name": "MecInd venda direta",
    "description": "Manutenção de equipamentos industriais: só vale a visita de vendas para quem tem a máquina e a "
                   "necessidade.",
    "thresholds": {"qualify": 50, "warm": 40, "hot": 70},
    "engagement_half_life_days": 30,
    "reasons": {"no_need": "Não precisa do serviço agora",
                "no_industrial_equipment": "Não trabalha com equipamentos industriais"},
    "rules": [
        {"name": "Não precisa", "field": "attributes.necessidade", "operator": "in",
         "value": ["nenhuma", "só pesquisando", "pesquisa acadêmica"], "effect": "disqualified", "reason": "no_need"},
        {"name": "Sem equipamento industrial", "field": "attributes.equipamentos_industriais", "operator": "equals",
         "value": "não", "effect": "disqualified", "reason": "no_industrial_equipment"},
        {"name": "Pede manutenção", "field": "interest", "operator": "contains", "value": "manutenção",
         "effect": "points", "points": 20},
        {"name": "Área técnica", "field": "job_title", "operator": "contains_any",
         "value": ["manutenção", "engenheiro", "engenheira", "técnico", "industrial"], "effect": "points",
         "points": 15},
        {"name": "Tem equipamentos", "field": "attributes.equipamentos_industriais", "operator": "equals",
         "value": "sim", "effect": "points", "points": 20},
        {"name": "Máquina parada", "field": "attributes.necessidade", "operator": "contains_any",
         "value": ["parad", "preventiva", "corretiva"], "effect": "points", "points": 20},
        {"name": "Indústria média", "field": "company_size", "operator": "gte", "value": 50,
         "effect": "points", "points": 10},
    ],
}
QUOTE = [*CONTACT, "equipamentos_industriais", "necessidade"]


def test_maintenance_a_lead_that_neither_needs_it_nor_has_the_equipment_is_disqualified(client):
    ruleset = company(MAINTENANCE, form="orcamento-manutencao", fields=QUOTE)
    lead = submit(client, "orcamento-manutencao", email="leo@escola.edu.br", name="Léo", job_title="Estudante",
                  interest="Orçamento de manutenção de equipamentos industriais",
                  necessidade="Só pesquisando", equipamentos_industriais="Não")
    # Both knock-outs match; the first in order gives the reason. Not for direct sales.
    assert (lead.status, lead.reason.slug, lead.score, lead.temperature) == ("disqualified", "no_need", 20, "cold")
    assert_decided_by(lead, "Não precisa", effect="disqualified", reason="no_need", seen="Só pesquisando")
    assert_decided_by(lead, "Sem equipamento industrial", effect="disqualified", reason="no_industrial_equipment",
                      seen="Não")
    assert_rescoring_changes_nothing(ruleset, lead)


def test_maintenance_a_plant_with_a_stopped_press_is_qualified_and_hot(client):
    ruleset = company(MAINTENANCE, form="orcamento-manutencao", fields=QUOTE)
    lead = submit(client, "orcamento-manutencao", email="rita@metalurgica.com.br", name="Rita",
                  company="Metalúrgica Sorocaba", job_title="Engenheira de Manutenção", company_size="51-200",
                  interest="Manutenção corretiva de prensa hidráulica", necessidade="Prensa parada",
                  equipamentos_industriais="Sim")
    assert (lead.status, lead.reason, lead.score, lead.temperature) == ("qualified", None, 85, "hot")
    assert line(capture_explanation(lead), "Máquina parada")["seen"] == "Prensa parada"
    assert_rescoring_changes_nothing(ruleset, lead)


# --- 3. A company that serves only the state of São Paulo --------------------------------------------

SAO_PAULO_ONLY = {
    "name": "Clima SP",
    "description": "Instalação de ar-condicionado; atendemos só o estado de São Paulo.",
    "thresholds": {"qualify": 40, "warm": 40, "hot": 70},
    "engagement_half_life_days": 30,
    "reasons": {"outside_service_area": "Fora da área de atendimento"},
    "rules": [
        {"name": "Fora do estado de SP", "field": "state", "operator": "not_in", "value": ["SP"],
         "effect": "out_of_focus", "reason": "outside_service_area"},
        {"name": "Climatização", "field": "interest", "operator": "contains_any",
         "value": ["ar-condicionado", "ar condicionado", "climatização", "split"], "effect": "points", "points": 30},
        {"name": "Empresa", "field": "company", "operator": "is_not_empty", "value": None, "effect": "points",
         "points": 10},
        {"name": "Decisor", "field": "job_title", "operator": "contains_any",
         "value": ["diretor", "gerente", "sócio", "proprietário", "síndico"], "effect": "points", "points": 20},
    ],
}
AIR_CONDITIONING = {"name": "Marta Reis", "company": "Hotel Rio Negro", "job_title": "Gerente Geral",
                    "interest": "Instalação de ar-condicionado split"}


def test_sao_paulo_only_a_lead_from_far_away_is_out_of_focus(client):
    ruleset = company(SAO_PAULO_ONLY, form="contato-clima")
    lead = submit(client, "contato-clima", email="marta@hotelrionegro.com.br", state="Amazonas", city="Manaus",
                  **AIR_CONDITIONING)
    # Out of focus whatever its points; the temperature still comes from the score.
    assert (lead.status, lead.reason.slug, lead.score, lead.temperature) == (
        "out_of_focus", "outside_service_area", 60, "warm")
    assert_decided_by(lead, "Fora do estado de SP", effect="out_of_focus", reason="outside_service_area", seen="AM")
    assert_rescoring_changes_nothing(ruleset, lead)


def test_sao_paulo_only_a_lead_from_the_state_is_qualified(client):
    ruleset = company(SAO_PAULO_ONLY, form="contato-clima")
    lead = submit(client, "contato-clima", email="marta@hotelcampinas.com.br", state="são paulo", city="Campinas",
                  **AIR_CONDITIONING)
    assert (lead.state, lead.status, lead.reason, lead.score, lead.temperature) == ("SP", "qualified", None, 60, "warm")
    assert "Fora do estado de SP" not in [item["name"] for item in capture_explanation(lead)]
    assert_rescoring_changes_nothing(ruleset, lead)


def test_sao_paulo_only_an_unknown_state_is_not_outside_the_area(client):
    ruleset = company(SAO_PAULO_ONLY, form="contato-clima")
    lead = submit(client, "contato-clima", email="marta@semestado.com.br", **AIR_CONDITIONING)
    assert (lead.state, lead.status, lead.reason) == ("", "qualified", None)
    assert_rescoring_changes_nothing(ruleset, lead)


# --- 4. The wooden pallets company (the issue's own rules file) ---------------------------------------

PALLETS = {
    "name": "Paletes SP",
    "thresholds": {"qualify": 40, "warm": 40, "hot": 70},
    "engagement_half_life_days": 30,
    "reasons": {"outside_service_area": "Fora da área de atendimento", "need_not_served": "Procura o que não vendemos",
                "no_budget": "Sem orçamento agora"},
    "rules": [
        {"name": "Fora de SP", "field": "state", "operator": "not_in", "value": ["SP"], "effect": "out_of_focus",
         "reason": "outside_service_area"},
        {"name": "Não é palete", "field": "interest", "operator": "not_contains", "value": "palete",
         "effect": "out_of_focus", "reason": "need_not_served"},
        {"name": "Sem orçamento", "field": "budget", "operator": "lt", "value": 5000, "effect": "disqualified",
         "reason": "no_budget"},
        {"name": "Decisor", "field": "job_title", "operator": "contains_any",
         "value": ["diretor", "gerente", "sócio", "ceo"], "effect": "points", "points": 30},
        {"name": "Empresa média", "field": "company_size", "operator": "gte", "value": 50, "effect": "points",
         "points": 20},
    ],
}


def test_pallets_a_lead_after_elevator_maintenance_is_out_of_focus(client):
    ruleset = company(PALLETS, form="contato")
    lead = submit(client, "contato", email="sindico@edificioaurora.com.br", name="Paulo Síndico", state="SP",
                  company="Condomínio Edifício Aurora", job_title="Síndico", interest="Manutenção de elevadores",
                  budget="R$ 3.000")
    # Out of focus wins over the no-budget knock-out that matches too.
    assert (lead.status, lead.reason.slug, lead.score, lead.temperature) == (
        "out_of_focus", "need_not_served", 0, "cold")
    assert_decided_by(lead, "Não é palete", effect="out_of_focus", reason="need_not_served",
                      seen="Manutenção de elevadores")
    assert line(capture_explanation(lead), "Sem orçamento")["seen"] == "3000.00"
    assert_rescoring_changes_nothing(ruleset, lead)


def test_pallets_a_logistics_manager_in_sao_paulo_is_qualified(client):
    ruleset = company(PALLETS, form="contato")
    lead = submit(client, "contato", email="compras@transportestiete.com.br", name="Ana", state="SP",
                  company="Transportes Tietê", job_title="Gerente de Logística", company_size="120",
                  interest="Paletes PBR de madeira", budget="R$ 12.000")
    assert (lead.status, lead.reason, lead.score, lead.temperature) == ("qualified", None, 50, "warm")
    assert [item["name"] for item in capture_explanation(lead)] == ["Decisor", "Empresa média"]
    assert_rescoring_changes_nothing(ruleset, lead)
