"""Rules as files: export_rules writes a ruleset as JSON, import_rules reads it back as a
draft (or activates it); a wrong rule is named and nothing is half-imported."""

import copy
import io
import json

import pytest
from django.core.management import CommandError, call_command

from leads.models import Reason
from scoring import services
from scoring.models import RescoreJob, Rule, Ruleset
from scoring.rules_io import RulesFileError, ruleset_export, ruleset_import

from ..factories import LeadFactory
from .factories import pallet_ruleset, reason

pytestmark = pytest.mark.django_db

# The example of issue 4, exactly as written there.
ISSUE_EXAMPLE = json.loads("""
{
  "name": "Paletes SP",
  "thresholds": {"qualify": 40, "warm": 40, "hot": 70},
  "engagement_half_life_days": 30,
  "reasons": {"outside_service_area": "Fora da área de atendimento", "need_not_served": "Procura o que não vendemos", "no_budget": "Sem orçamento agora"},
  "rules": [
    {"name": "Fora de SP", "field": "state", "operator": "not_in", "value": ["SP"], "effect": "out_of_focus", "reason": "outside_service_area"},
    {"name": "Não é palete", "field": "interest", "operator": "not_contains", "value": "palete", "effect": "out_of_focus", "reason": "need_not_served"},
    {"name": "Sem orçamento", "field": "budget", "operator": "lt", "value": 5000, "effect": "disqualified", "reason": "no_budget"},
    {"name": "Decisor", "field": "job_title", "operator": "contains_any", "value": ["diretor", "gerente", "sócio", "ceo"], "effect": "points", "points": 30},
    {"name": "Empresa média", "field": "company_size", "operator": "gte", "value": 50, "effect": "points", "points": 20}
  ]
}
""")  # noqa: E501


def every_feature_ruleset():
    """Thresholds, engagement, an inactive rule, a reason both kinds of knock-out give."""
    ruleset = pallet_ruleset(description="Só atendemos SP.\nRevisado em março.", submission_points=5,
                             email_open_points=1, email_click_points=3)
    Ruleset.objects.filter(pk=ruleset.pk).update(engagement_half_life_days=14)
    spam = reason("spam_like", "Parece spam", Reason.Kind.BOTH)
    extra = [
        dict(name="Abriu e-mails", field="email_opens", operator="gte", value=3, window_days=7, points=10),
        dict(name="Free mail", field="email", operator="email_domain_in", value=["gmail.com", "hotmail.com"],
             points=-10),
        dict(name="Frota", field="attributes.frota", operator="between", value=[10, 500], points=15),
        dict(name="Teste", field="company", operator="matches", value="^(teste|asdf)", effect="out_of_focus",
             reason=spam),
        dict(name="Nome vazio", field="first_name", operator="is_empty", value=None, effect="disqualified",
             reason=spam, active=False),
    ]
    for order, rule in enumerate(extra, start=10):
        Rule.objects.create(ruleset=ruleset, order=order, **rule)
    return ruleset


def export_command(*args):
    out = io.StringIO()
    call_command("export_rules", *args, stdout=out)
    return out.getvalue()


def import_command(tmp_path, data, *args):
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
    out = io.StringIO()
    call_command("import_rules", str(path), *args, stdout=out)
    return out.getvalue()


def database_state():
    return (
        list(Ruleset.objects.order_by("pk").values_list("pk", "state", "version")),
        list(Rule.objects.order_by("pk").values_list("pk", flat=True)),
        list(Reason.objects.order_by("pk").values_list("slug", "kind", "label")),
    )


def without_version(data):
    return {key: value for key, value in data.items() if key != "version"}


# --- Round trip ---------------------------------------------------------------------------------


def test_export_then_import_then_export_gives_the_same_file(tmp_path):
    original = every_feature_ruleset()
    Ruleset.objects.filter(pk=original.pk).update(state=Ruleset.State.ACTIVE)
    first = json.loads(export_command())
    assert (first["name"], first["engagement_half_life_days"]) == ("Paletes SP", 14)
    assert first["engagement_points"] == {"submission": 5, "email_open": 1, "email_click": 3}
    assert first["reasons"]["spam_like"] == "Parece spam"
    assert [rule["name"] for rule in first["rules"]][:2] == ["Fora de SP", "Não é palete"]
    assert first["rules"][5] == {"name": "Abriu e-mails", "field": "email_opens", "operator": "gte", "value": 3,
                                 "effect": "points", "points": 10, "window_days": 7}
    assert first["rules"][-1]["active"] is False

    import_command(tmp_path, first)
    imported = Ruleset.objects.get(state=Ruleset.State.DRAFT)
    assert imported.pk != original.pk
    assert without_version(ruleset_export(imported)) == without_version(first)
    assert (imported.version, first["version"]) == (2, 1)


def test_the_file_is_utf8_indented_json_whatever_the_terminal(tmp_path):
    pallet_ruleset(state=Ruleset.State.ACTIVE)
    text = export_command()
    assert text.startswith('{\n  "name": "Paletes SP",')
    assert "Não é palete" in text  # not \u00e3o

    class Latin1Terminal(io.TextIOWrapper):
        pass

    raw = io.BytesIO()
    terminal = Latin1Terminal(raw, encoding="ascii")
    call_command("export_rules", stdout=terminal)
    terminal.flush()
    assert json.loads(raw.getvalue().decode("utf-8"))["rules"][1]["name"] == "Não é palete"


def test_export_by_name_prefers_the_active_version_then_the_latest():
    first = pallet_ruleset()
    services.ruleset_activate(ruleset=first)
    draft = services.ruleset_duplicate(ruleset=first)
    Ruleset.objects.filter(pk=draft.pk).update(description="draft")
    assert json.loads(export_command("--ruleset", "Paletes SP"))["version"] == 1
    Ruleset.objects.filter(pk=first.pk).update(state=Ruleset.State.ARCHIVED)
    assert json.loads(export_command("--ruleset", "Paletes SP"))["description"] == "draft"
    with pytest.raises(CommandError, match="No ruleset is named 'Cimento'"):
        export_command("--ruleset", "Cimento")


def test_without_an_active_ruleset_export_says_so():
    with pytest.raises(CommandError, match="no active ruleset"):
        export_command()


# --- The issue's example --------------------------------------------------------------------------


def test_the_issues_example_imports_as_written():
    ruleset = ruleset_import(copy.deepcopy(ISSUE_EXAMPLE))
    assert (ruleset.state, ruleset.qualify_threshold, ruleset.warm_threshold, ruleset.hot_threshold,
            ruleset.engagement_half_life_days) == (Ruleset.State.DRAFT, 40, 40, 70, 30)
    rules = list(ruleset.rules.order_by("order"))
    assert [(rule.name, rule.field, rule.operator, rule.value, rule.effect, rule.points,
             rule.reason.slug if rule.reason else None) for rule in rules] == [
        ("Fora de SP", "state", "not_in", ["SP"], "out_of_focus", 0, "outside_service_area"),
        ("Não é palete", "interest", "not_contains", "palete", "out_of_focus", 0, "need_not_served"),
        ("Sem orçamento", "budget", "lt", 5000, "disqualified", 0, "no_budget"),
        ("Decisor", "job_title", "contains_any", ["diretor", "gerente", "sócio", "ceo"], "points", 30, None),
        ("Empresa média", "company_size", "gte", 50, "points", 20, None),
    ]
    # Reasons it names are created, each for the kind of knock-out that gives it.
    assert dict(Reason.objects.filter(slug__in=ISSUE_EXAMPLE["reasons"]).values_list("slug", "kind")) == {
        "outside_service_area": "out_of_focus", "need_not_served": "out_of_focus", "no_budget": "disqualified",
    }
    assert Reason.objects.get(slug="need_not_served").label == "Procura o que não vendemos"
    exported = ruleset_export(ruleset)
    assert {key: exported[key] for key in ISSUE_EXAMPLE} == ISSUE_EXAMPLE
    assert exported["engagement_points"] == {"submission": 0, "email_open": 0, "email_click": 0}


def test_an_imported_ruleset_decides_like_the_one_built_by_hand():
    lead = LeadFactory(state="SP", interest="Paletes PBR", job_title="Diretor", company_size=80, budget=9000)
    by_hand = services.lead_evaluate(lead=lead, rules=services.ruleset_to_engine(pallet_ruleset()))
    imported = services.lead_evaluate(lead=lead, rules=services.ruleset_to_engine(
        ruleset_import(copy.deepcopy(ISSUE_EXAMPLE))))
    assert (imported.status, imported.score, imported.temperature) == (by_hand.status, by_hand.score,
                                                                       by_hand.temperature) == ("qualified", 50, "warm")


def test_existing_reasons_are_reused_and_a_reason_both_effects_give_is_for_both():
    reason("no_budget", "Sem verba", Reason.Kind.DISQUALIFIED)
    data = copy.deepcopy(ISSUE_EXAMPLE)
    data["reasons"]["curious"] = "Só curiosidade"
    data["rules"] += [
        {"name": "Estudante", "field": "job_title", "operator": "contains", "value": "estudante",
         "effect": "disqualified", "reason": "curious"},
        {"name": "Pesquisa", "field": "interest", "operator": "contains", "value": "tcc",
         "effect": "out_of_focus", "reason": "curious"},
    ]
    ruleset_import(data)
    assert Reason.objects.get(slug="no_budget").label == "Sem verba"  # not overwritten
    assert Reason.objects.get(slug="curious").kind == Reason.Kind.BOTH


# --- Errors: named, and nothing half-imported -----------------------------------------------------


def with_rule(rule, **top):
    data = copy.deepcopy(ISSUE_EXAMPLE)
    data["reasons"]["brand_new"] = "Um motivo novo"  # would be created by a half-import
    data["rules"].insert(0, {"name": "Novo", "field": "city", "operator": "equals", "value": "Santos",
                             "effect": "out_of_focus", "reason": "brand_new"})
    data["rules"].append(rule)
    data.update(top)
    return data


BAD_RULES = [
    ({"name": "Cidade", "field": "cidade", "operator": "equals", "value": "Santos", "effect": "points", "points": 5},
     "Unknown field: 'cidade'"),
    ({"name": "Cidade", "field": "city", "operator": "is", "value": "Santos", "effect": "points", "points": 5},
     "Unknown operator: 'is'"),
    ({"name": "Cidade", "field": "city", "operator": "equals", "value": "Santos", "effect": "out_of_focus",
      "reason": "far_away"}, "unknown reason 'far_away'"),
    ({"name": "Cidade", "field": "city", "operator": "gt", "value": 5, "effect": "points", "points": 5},
     "does not fit the field 'city'"),
    ({"name": "Cidade", "field": "city", "operator": "in", "value": [], "effect": "points", "points": 5},
     "non-empty list"),
    ({"name": "Cidade", "field": "city", "operator": "matches", "value": "(sao", "effect": "points", "points": 5},
     "does not compile"),
    ({"name": "Cidade", "field": "budget", "operator": "gte", "value": "muito", "effect": "points", "points": 5},
     "'muito' is not a number"),
    ({"name": "Cidade", "field": "city", "operator": "equals", "value": "Santos", "effect": "nurture"},
     "unknown effect 'nurture'"),
    ({"name": "Cidade", "field": "city", "operator": "equals", "value": "Santos", "effect": "points"},
     '"points" must be a whole number'),
    ({"name": "Cidade", "field": "city", "operator": "equals", "value": "Santos", "effect": "disqualified"},
     '"reason" must be a non-empty text'),
    ({"name": "Cidade", "field": "city", "operator": "equals", "value": "Santos", "effect": "disqualified",
      "reason": "outside_service_area"}, "the reason 'outside_service_area' is for out of focus leads"),
    ({"name": "Cidade", "field": "city", "operator": "equals", "value": "Santos", "effect": "points", "points": 5,
      "reson": "typo"}, "unknown key 'reson'"),
]


@pytest.mark.parametrize(("rule", "message"), BAD_RULES, ids=[message for _rule, message in BAD_RULES])
def test_a_wrong_rule_is_named_and_nothing_is_imported(rule, message):
    reason("outside_service_area", "Fora da área de atendimento", Reason.Kind.OUT_OF_FOCUS)
    before = database_state()
    with pytest.raises(RulesFileError) as caught:
        ruleset_import(with_rule(rule))
    assert str(caught.value).startswith('rules[6] "Cidade": ')
    assert message in str(caught.value)
    assert database_state() == before


def test_a_rule_without_a_name_is_named_by_its_index():
    with pytest.raises(RulesFileError, match=r"^rules\[6\]: \"name\" must be a non-empty text"):
        ruleset_import(with_rule({"field": "city", "operator": "is_empty", "effect": "points", "points": 1}))


@pytest.mark.parametrize(("change", "message"), [
    ({"thresholds": {"qualify": 40, "warm": 70, "hot": 40}}, "hot must start at or above warm"),
    ({"thresholds": {"qualify": "40", "warm": 40, "hot": 70}}, '"thresholds.qualify" must be a whole number'),
    ({"engagement_half_life_days": 0}, "at least 1"),
    ({"reasons": {"fora da área": "Fora"}}, "is not a slug"),
    ({"rules": {"name": "x"}}, '"rules" must be a list'),
    ({"tresholds": {}}, "unknown key 'tresholds'"),
    ({"name": ""}, '"name" must be a non-empty text'),
])
def test_a_wrong_file_is_refused_whole(change, message):
    before = database_state()
    data = copy.deepcopy(ISSUE_EXAMPLE)
    data.update(change)
    with pytest.raises(RulesFileError, match=message):
        ruleset_import(data)
    assert database_state() == before


def test_the_command_reports_the_rule_and_imports_nothing(tmp_path):
    before = database_state()
    bad = with_rule({"name": "Cidade", "field": "cidade", "operator": "equals", "value": "x", "effect": "points",
                     "points": 1})
    with pytest.raises(CommandError, match=r'rules\[6\] "Cidade": Unknown field: \'cidade\'.*Nothing was imported'):
        import_command(tmp_path, bad, "--activate")
    assert database_state() == before


def test_the_command_refuses_a_file_that_is_not_json(tmp_path):
    path = tmp_path / "rules.json"
    path.write_text('{"name": "Paletes SP",', encoding="utf-8")
    with pytest.raises(CommandError, match="not valid JSON"):
        call_command("import_rules", str(path), stdout=io.StringIO())


# --- Import, then activate ------------------------------------------------------------------------


def test_import_makes_a_draft_by_default(tmp_path):
    out = import_command(tmp_path, ISSUE_EXAMPLE)
    ruleset = Ruleset.objects.get()
    assert ruleset.state == Ruleset.State.DRAFT
    assert "Imported Paletes SP" in out and "draft" in out
    assert not RescoreJob.objects.exists()


def test_activate_archives_the_active_ruleset_and_queues_the_rescoring(tmp_path):
    previous = pallet_ruleset()
    services.ruleset_activate(ruleset=previous)
    lead = LeadFactory(state="SP", interest="paletes", job_title="Gerente", company_size=10)
    data = copy.deepcopy(ISSUE_EXAMPLE)
    data["thresholds"]["qualify"] = 30  # the manager alone is enough now

    out = import_command(tmp_path, data, "--activate")

    imported = Ruleset.objects.get(state=Ruleset.State.ACTIVE)
    previous.refresh_from_db()
    assert (imported.pk != previous.pk, previous.state, imported.version) == (True, Ruleset.State.ARCHIVED, 2)
    job = RescoreJob.objects.get(ruleset=imported)
    assert (job.kind, job.status) == (RescoreJob.Kind.ACTIVATION, RescoreJob.Status.PENDING)
    assert f"rescoring job #{job.pk} queued" in out
    services.rescore_job_run(job_id=job.pk)
    lead.refresh_from_db()
    assert (lead.status, lead.score) == ("qualified", 30)
