"""The rulesets API: marketers create and change drafts with their ordered rules, see
the impact of activating one, preview a lead, activate it and follow the rescoring."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from leads import services as lead_services
from leads.models import Lead, LeadStatus
from scoring import services, tasks
from scoring.models import RescoreJob, Rule, Ruleset

from ..factories import LeadFactory, UserFactory
from .factories import pallet_ruleset, reason

pytestmark = pytest.mark.django_db

RULES_URL = "/api/v1/rulesets/"


def url(ruleset, action=""):
    return f"{RULES_URL}{ruleset.pk}/{action + '/' if action else ''}"


def client_for(user=None):
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


@pytest.fixture
def api(marketer):
    return client_for(marketer)


@pytest.fixture
def reasons():
    return {
        "outside_service_area": reason("outside_service_area", "Fora da área de atendimento", "out_of_focus"),
        "need_not_served": reason("need_not_served", "Procura o que não vendemos", "out_of_focus"),
        "no_budget": reason("no_budget", "Sem orçamento agora", "disqualified"),
    }


def pallet_payload(**overrides):
    """The issue's rules file, as the API takes it."""
    return {
        "name": "Paletes SP",
        "thresholds": {"qualify": 40, "warm": 40, "hot": 70},
        "engagement_half_life_days": 30,
        "engagement_points": {"submission": 5, "email_open": 1, "email_click": 2},
        "rules": [
            {"name": "Fora de SP", "field": "state", "operator": "not_in", "value": ["SP"],
             "effect": "out_of_focus", "reason": "outside_service_area"},
            {"name": "Não é palete", "field": "interest", "operator": "not_contains", "value": "palete",
             "effect": "out_of_focus", "reason": "need_not_served"},
            {"name": "Sem orçamento", "field": "budget", "operator": "lt", "value": 5000, "effect": "disqualified",
             "reason": "no_budget"},
            {"name": "Decisor", "field": "job_title", "operator": "contains_any",
             "value": ["diretor", "gerente", "sócio", "ceo"], "effect": "points", "points": 30},
            {"name": "Empresa média", "field": "company_size", "operator": "gte", "value": 50, "effect": "points",
             "points": 20},
            {"name": "Abriu e-mails", "field": "email_opens", "operator": "gte", "value": 2, "window_days": 14,
             "points": 5},
        ],
        **overrides,
    }


# --- Who may -------------------------------------------------------------------------------


def test_anonymous_requests_get_401_everywhere(reasons):
    ruleset = pallet_ruleset()
    anonymous = client_for()
    for method, path in (("get", RULES_URL), ("get", url(ruleset)), ("post", RULES_URL),
                         ("patch", url(ruleset)), ("post", url(ruleset, "activate")), ("get", url(ruleset, "impact")),
                         ("post", url(ruleset, "preview")), ("get", "/api/v1/rescore-jobs/")):
        response = getattr(anonymous, method)(path, {}, format="json")
        assert response.status_code == 401, (method, path)
        assert "detail" in response.json()


def test_sales_read_rulesets_but_may_not_write_preview_or_see_the_impact(rep, manager, reasons):
    ruleset = pallet_ruleset()
    for user in (rep, manager):
        sales = client_for(user)
        listing = sales.get(RULES_URL)
        assert listing.status_code == 200
        assert [item["name"] for item in listing.json()] == ["Paletes SP"]
        assert sales.get(url(ruleset)).status_code == 200
        for method, path in (("post", RULES_URL), ("patch", url(ruleset)), ("put", url(ruleset)),
                             ("delete", url(ruleset)), ("post", url(ruleset, "activate")),
                             ("post", url(ruleset, "duplicate")), ("get", url(ruleset, "impact")),
                             ("post", url(ruleset, "preview")), ("get", "/api/v1/rescore-jobs/")):
            response = getattr(sales, method)(path, pallet_payload(), format="json")
            assert response.status_code == 403, (user.username, method, path)
    assert Ruleset.objects.get().state == Ruleset.State.DRAFT
    assert Ruleset.objects.count() == 1


def test_a_user_without_a_role_may_not_even_read(reasons):
    pallet_ruleset()
    nobody = client_for(UserFactory(username="nobody"))
    assert nobody.get(RULES_URL).status_code == 403


def test_a_superuser_may_write(admin_user, reasons):
    response = client_for(admin_user).post(RULES_URL, pallet_payload(), format="json")
    assert response.status_code == 201, response.json()


# --- Create, read, change -------------------------------------------------------------------


def test_a_marketer_creates_a_draft_with_ordered_rules_and_reads_it_back(api, reasons):
    response = api.post(RULES_URL, pallet_payload(), format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    ruleset = Ruleset.objects.get()
    assert response["Location"].endswith(url(ruleset))
    assert (body["state"], body["version"], body["editable"]) == ("draft", 1, True)
    assert body["thresholds"] == {"qualify": 40, "warm": 40, "hot": 70}
    assert body["engagement_points"] == {"submission": 5, "email_open": 1, "email_click": 2}
    assert [rule["name"] for rule in body["rules"]] == [rule["name"] for rule in pallet_payload()["rules"]]
    assert [rule["order"] for rule in body["rules"]] == list(range(6))
    assert body["rules"][0] | {"id": None} == {
        "id": None, "order": 0, "name": "Fora de SP", "field": "state", "operator": "not_in", "value": ["SP"],
        "window_days": 30, "effect": "out_of_focus", "points": 0, "reason": "outside_service_area", "active": True,
    }
    assert body["rules"][5]["window_days"] == 14
    assert api.get(url(ruleset)).json() == body
    # What the engine reads is what was posted.
    rules = services.ruleset_to_engine(ruleset)
    assert (rules.qualify, rules.warm, rules.hot) == (40, 40, 70)
    assert [rule.reason for rule in rules.rules][:3] == ["outside_service_area", "need_not_served", "no_budget"]


def test_the_list_filters_by_state(api, reasons):
    draft = pallet_ruleset()
    pallet_ruleset(state=Ruleset.State.ACTIVE)
    assert [item["id"] for item in api.get(RULES_URL, {"state": "draft"}).json()] == [draft.pk]
    assert len(api.get(RULES_URL).json()) == 2
    wrong = api.get(RULES_URL, {"state": "sleeping"})
    assert wrong.status_code == 400 and "state" in wrong.json()["errors"]


def test_patch_changes_only_what_it_names_and_rules_replace_the_list(api, reasons):
    ruleset = Ruleset.objects.get(pk=api.post(RULES_URL, pallet_payload(), format="json").json()["id"])
    response = api.patch(url(ruleset), {"thresholds": {"qualify": 50, "warm": 30, "hot": 80}}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["thresholds"] == {"qualify": 50, "warm": 30, "hot": 80}
    assert len(response.json()["rules"]) == 6
    two = [{"name": "Decisor", "field": "job_title", "operator": "contains", "value": "diretor", "points": 30},
           {"name": "Fora de SP", "field": "state", "operator": "not_equals", "value": "sp",
            "effect": "out_of_focus", "reason": "outside_service_area"}]
    response = api.patch(url(ruleset), {"rules": two}, format="json")
    assert response.status_code == 200, response.json()
    assert [(rule["order"], rule["name"]) for rule in response.json()["rules"]] == [(0, "Decisor"), (1, "Fora de SP")]
    assert Rule.objects.filter(ruleset=ruleset).count() == 2


def test_put_replaces_the_draft(api, reasons):
    ruleset = Ruleset.objects.get(pk=api.post(RULES_URL, pallet_payload(), format="json").json()["id"])
    response = api.put(url(ruleset), pallet_payload(name="Paletes SP e RJ", rules=[]), format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["name"] == "Paletes SP e RJ" and response.json()["rules"] == []
    missing = api.put(url(ruleset), {"name": "x"}, format="json")
    assert missing.status_code == 400 and "thresholds" in missing.json()["errors"]


@pytest.mark.parametrize(("rule", "key", "words"), [
    ({"field": "budget", "operator": "contains", "value": "5"}, "rules[1].operator", "does not fit"),
    ({"field": "city", "operator": "matches", "value": "(são"}, "rules[1].value", "does not compile"),
    ({"field": "state", "operator": "in", "value": []}, "rules[1].value", "non-empty list"),
    ({"field": "budget", "operator": "between", "value": [1]}, "rules[1].value", "two numbers"),
    ({"field": "planet", "operator": "equals", "value": "x"}, "rules[1].field", "Unknown field"),
    ({"field": "state", "operator": "resembles", "value": "x"}, "rules[1].operator", ""),
    ({"field": "state", "operator": "in", "value": ["RJ"], "effect": "out_of_focus", "reason": "no_such"},
     "rules[1].reason", "Unknown reason"),
    ({"field": "state", "operator": "in", "value": ["RJ"], "effect": "out_of_focus"}, "rules[1].reason",
     "needs the reason"),
    ({"field": "state", "operator": "in", "value": ["RJ"], "effect": "out_of_focus", "reason": "no_budget"},
     "rules[1].reason", "does not apply"),
    ({"field": "state", "operator": "in", "value": ["RJ"], "effect": "sideways"}, "rules[1].effect", ""),
    ({"field": "submissions", "operator": "gte", "value": "muitas"}, "rules[1].value", "not a number"),
])
def test_a_wrong_rule_is_refused_naming_the_rule_and_its_field_and_nothing_is_written(api, reasons, rule, key, words):
    good = {"name": "Decisor", "field": "job_title", "operator": "contains", "value": "diretor", "points": 30}
    response = api.post(RULES_URL, pallet_payload(rules=[good, {"name": "Regra ruim", **rule}]), format="json")
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert list(errors) == [key], errors
    assert errors[key][0].startswith('"Regra ruim": ') and words in errors[key][0]
    assert not Ruleset.objects.exists() and not Rule.objects.exists()


def test_a_wrong_rule_on_patch_leaves_the_draft_as_it_was(api, reasons):
    ruleset = Ruleset.objects.get(pk=api.post(RULES_URL, pallet_payload(), format="json").json()["id"])
    bad = {"name": "Regex", "field": "city", "operator": "matches", "value": "[a-"}
    response = api.patch(url(ruleset), {"name": "Novo nome", "rules": [bad]}, format="json")
    assert response.status_code == 400 and list(response.json()["errors"]) == ["rules[0].value"]
    ruleset.refresh_from_db()
    assert ruleset.name == "Paletes SP" and ruleset.rules.count() == 6


@pytest.mark.parametrize(("payload", "key"), [
    ({"thresholds": {"qualify": 40, "warm": 70, "hot": 40}}, "thresholds"),
    ({"engagement_half_life_days": 0}, "engagement_half_life_days"),
    ({"engagement_points": {"pageviews": 3}}, "engagement_points"),
    ({"colour": "blue"}, "colour"),
    ({"rules": "all of them"}, "rules"),
])
def test_wrong_ruleset_settings_are_refused_with_the_key_at_fault(api, reasons, payload, key):
    response = api.post(RULES_URL, pallet_payload(**payload), format="json")
    assert response.status_code == 400
    assert key in response.json()["errors"], response.json()
    assert not Ruleset.objects.exists()


def test_malformed_json_is_a_400_not_a_500(api, reasons):
    response = api.generic("POST", RULES_URL, "{not json", content_type="application/json")
    assert response.status_code == 400 and "errors" in response.json()
    draft = pallet_ruleset()
    for method, path, body in (("post", RULES_URL, []), ("patch", url(draft), ["x"]), ("put", url(draft), "x"),
                               ("post", url(draft, "preview"), [1]),
                               ("post", RULES_URL, pallet_payload(rules=[["not", "a", "rule"]]))):
        response = getattr(api, method)(path, body, format="json")
        assert response.status_code == 400, (method, path, body)
        assert "errors" in response.json()


def test_active_and_archived_rulesets_stay_readable_but_not_editable(api, reasons):
    archived = pallet_ruleset()
    services.ruleset_activate(ruleset=archived)
    active = pallet_ruleset()
    services.ruleset_activate(ruleset=active)
    archived.refresh_from_db()
    assert archived.state == Ruleset.State.ARCHIVED
    for ruleset in (archived, active):
        read = api.get(url(ruleset))
        assert read.status_code == 200 and read.json()["editable"] is False and len(read.json()["rules"]) == 5
        for method in ("put", "patch"):
            response = getattr(api, method)(url(ruleset), pallet_payload(name="Outro"), format="json")
            assert response.status_code == 409 and "Duplicate" in response.json()["detail"]
        assert api.delete(url(ruleset)).status_code == 409
        ruleset.refresh_from_db()
        assert ruleset.name == "Paletes SP" and ruleset.rules.count() == 5


def test_duplicate_makes_an_editable_draft_of_the_next_version(api, reasons):
    active = pallet_ruleset()
    services.ruleset_activate(ruleset=active)
    response = api.post(url(active, "duplicate"))
    assert response.status_code == 201
    copy = response.json()
    assert (copy["state"], copy["version"], copy["editable"]) == ("draft", 2, True)
    assert [rule["name"] for rule in copy["rules"]] == [rule.name for rule in active.rules.order_by("order")]
    changed = api.patch(f"{RULES_URL}{copy['id']}/", {"thresholds": {"qualify": 60, "warm": 40, "hot": 70}},
                        format="json")
    assert changed.status_code == 200
    active.refresh_from_db()
    assert active.qualify_threshold == 40 and active.state == Ruleset.State.ACTIVE


def test_a_draft_can_be_deleted(api, reasons):
    draft = pallet_ruleset()
    assert api.delete(url(draft)).status_code == 204
    assert not Ruleset.objects.exists()


# --- Activate and follow the job ---------------------------------------------------------------


def test_activate_queues_the_rescoring_job_on_commit_and_returns_its_id(
    api, reasons, monkeypatch, django_capture_on_commit_callbacks
):
    queued = []
    monkeypatch.setattr(tasks.run_rescore_job, "delay", lambda job_id: queued.append(job_id))
    lead = LeadFactory(state="SP", interest="paletes", job_title="Diretor", company_size=80,
                       budget=Decimal("9000"))
    previous = pallet_ruleset()
    services.ruleset_activate(ruleset=previous)
    draft = Ruleset.objects.get(pk=api.post(RULES_URL, pallet_payload(), format="json").json()["id"])
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = api.post(url(draft, "activate"))
    assert response.status_code == 202, response.json()
    body = response.json()
    job = RescoreJob.objects.get(pk=body["job"]["id"])
    assert body["job_url"].endswith(f"/api/v1/rescore-jobs/{job.pk}/") and response["Location"] == body["job_url"]
    assert body["ruleset"]["state"] == "active" and (job.kind, job.ruleset_id) == ("activation", draft.pk)
    assert queued == []  # not before the commit
    for callback in callbacks:
        callback()
    assert queued == [job.pk]
    previous.refresh_from_db()
    assert previous.state == Ruleset.State.ARCHIVED
    # The job's page follows it from pending to done.
    progress = api.get(f"/api/v1/rescore-jobs/{job.pk}/")
    assert progress.status_code == 200 and progress.json()["status"] == "pending"
    services.rescore_job_run(job_id=job.pk)
    done = api.get(f"/api/v1/rescore-jobs/{job.pk}/").json()
    assert (done["status"], done["progress"], done["leads_seen"]) == ("done", 100, 1)
    lead.refresh_from_db()
    assert (lead.status, lead.score) == (LeadStatus.QUALIFIED, 55)  # 30 + 20 + 5 for its submission
    assert api.get("/api/v1/rescore-jobs/").json()["results"][0]["id"] == job.pk
    again = api.post(url(draft, "activate"))
    assert again.status_code == 409


def test_an_unknown_ruleset_or_job_is_a_404(api):
    assert api.get(f"{RULES_URL}999999/").status_code == 404
    assert api.post(f"{RULES_URL}999999/activate/").status_code == 404
    assert api.get("/api/v1/rescore-jobs/999999/").status_code == 404


# --- Impact and preview ----------------------------------------------------------------------------


def test_impact_counts_status_and_temperature_moves_with_sample_leads(api, reasons, rep):
    active = pallet_ruleset()
    services.rescore_job_run(job_id=services.ruleset_activate(ruleset=active).pk)
    fits = LeadFactory(state="SP", interest="paletes", job_title="Diretor", company_size=80, budget=Decimal("9000"))
    small = LeadFactory(state="SP", interest="paletes", job_title="Analista", company_size=80,
                        budget=Decimal("9000"))
    rio = LeadFactory(state="RJ", interest="paletes", job_title="Diretor", company_size=80, budget=Decimal("9000"))
    kept = lead_services.lead_change_status(lead=LeadFactory(state="RJ", interest="paletes"),
                                            status=LeadStatus.QUALIFIED, actor=rep)
    services.rescore_job_run(job_id=services.rescore_job_create(ruleset=active).pk)
    # The draft also serves Rio de Janeiro and asks for more points.
    draft = services.ruleset_duplicate(ruleset=active)
    draft.rules.filter(name="Fora de SP").update(value=["SP", "RJ"])
    Ruleset.objects.filter(pk=draft.pk).update(qualify_threshold=55)
    statuses = dict(Lead.objects.values_list("pk", "status"))
    response = api.get(url(draft, "impact"))
    assert response.status_code == 200
    body = response.json()
    assert body["leads"] == 4
    moves = {(row["from"], row["to"]): row["count"] for row in body["status"]}
    # fits: qualified at 50 points, short of 55 now; small: below the threshold either way; rio: now served,
    # but short of points; kept: a rep qualified it, so it stays whatever the rules say.
    assert moves == {("qualified", "disqualified"): 1, ("disqualified", "disqualified"): 1,
                     ("out_of_focus", "disqualified"): 1, ("qualified", "qualified"): 1}
    assert body["status_moves"] == 2
    samples = {(sample["from"], sample["to"]): [lead["id"] for lead in sample["leads"]] for sample in body["samples"]}
    assert samples == {("qualified", "disqualified"): [fits.pk], ("out_of_focus", "disqualified"): [rio.pk]}
    assert {(row["from"], row["to"]) for row in body["temperature"]} == {("warm", "warm"), ("cold", "cold")}
    assert dict(Lead.objects.values_list("pk", "status")) == statuses  # nothing written
    assert statuses[small.pk] == LeadStatus.DISQUALIFIED and statuses[kept.pk] == LeadStatus.QUALIFIED


def test_preview_explains_a_lead_and_says_when_a_person_set_its_status(api, reasons, rep):
    draft = Ruleset.objects.get(pk=api.post(RULES_URL, pallet_payload(), format="json").json()["id"])
    lead = LeadFactory(state="SP", interest="Paletes PBR", job_title="Diretora Comercial", company_size=50,
                       budget=Decimal("20000"))
    response = api.post(url(draft, "preview"), {"lead": lead.pk}, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["status"], body["reason"], body["score"], body["temperature"]) == ("qualified", "", 55, "warm")
    assert [(item["name"], item["effect"], item["points"], item["seen"]) for item in body["explanation"]] == [
        ("Decisor", "points", 30, "Diretora Comercial"), ("Empresa média", "points", 20, 50),
        ("engagement", "points", 5, 5.0),
    ]
    assert body["lead"]["status_would_apply"] is True
    lead_services.lead_change_status(lead=lead, status=LeadStatus.DISQUALIFIED, actor=rep,
                                     reason=reasons["no_budget"])
    again = api.post(url(draft, "preview"), {"lead": lead.pk}, format="json").json()
    assert again["lead"] == {"id": lead.pk, "status": "disqualified", "status_set_by": "person", "score": lead.score,
                             "temperature": lead.temperature, "status_would_apply": False}
    assert api.post(url(draft, "preview"), {"lead": 999999}, format="json").status_code == 404


def test_preview_evaluates_facts_typed_in_with_their_events(api, reasons):
    draft = Ruleset.objects.get(pk=api.post(RULES_URL, pallet_payload(), format="json").json()["id"])
    now = timezone.now()
    facts = {"state": "sp", "interest": "PALETES de madeira", "job_title": "sócio", "budget": "4999.99"}
    response = api.post(url(draft, "preview"), {"facts": facts, "now": now.isoformat()}, format="json")
    body = response.json()
    assert (body["status"], body["reason"], body["score"]) == ("disqualified", "no_budget", 30)
    assert [(item["name"], item["effect"], item["seen"]) for item in body["explanation"]] == [
        ("Sem orçamento", "disqualified", "4999.99"), ("Decisor", "points", "sócio")]
    events = [{"kind": "email_opened", "at": (now - timedelta(days=1)).isoformat()},
              {"kind": "email_opened", "at": (now - timedelta(days=20)).isoformat()}]
    opened = api.post(url(draft, "preview"), {"facts": {**facts, "budget": 6000}, "events": events,
                                              "now": now.isoformat()}, format="json").json()
    # Two opens at 1 point each, decayed, and only one inside the 14-day window: no "Abriu e-mails".
    assert opened["status"] == "disqualified" and opened["reason"] == "below_threshold"
    assert [item["name"] for item in opened["explanation"]] == ["Decisor", "engagement"]
    far = api.post(url(draft, "preview"), {"facts": {"state": "Bahia"}}, format="json").json()
    assert (far["status"], far["reason"]) == ("out_of_focus", "outside_service_area")


@pytest.mark.parametrize(("payload", "key"), [
    ({}, "non_field_errors"),
    ({"lead": 1, "facts": {}}, "non_field_errors"),
    ({"facts": {"planet": "Marte"}}, "facts"),
    ({"facts": {"budget": "muito"}}, "facts"),
    ({"facts": {"state": ["SP"]}}, "facts"),
    ({"facts": {"attributes": "x"}}, "facts"),
    ({"facts": {}, "events": [{"kind": "note", "at": "2026-01-01T00:00:00Z"}]}, "events"),
    ({"facts": {}, "now": "yesterday"}, "now"),
])
def test_a_wrong_preview_request_is_a_400_naming_the_key(api, reasons, payload, key):
    draft = pallet_ruleset()
    response = api.post(url(draft, "preview"), payload, format="json")
    assert response.status_code == 400
    assert key in response.json()["errors"], response.json()


def test_the_schema_documents_the_rulesets_api(admin_client):
    schema = admin_client.get("/api/schema/")
    assert schema.status_code == 200
    assert b"/api/v1/rulesets/{id}/activate/" in schema.content
    assert b"/api/v1/rescore-jobs/{id}/" in schema.content
