"""Marketers edit drafts, see their impact, activate them and watch the rescoring."""

from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from leads.models import Lead, LeadStatus
from scoring import services
from scoring.models import RescoreJob, Rule, Ruleset

from ..factories import LeadFactory
from .factories import pallet_ruleset, reason

pytestmark = pytest.mark.django_db

PEOPLE = [
    dict(state="SP", interest="Paletes PBR", job_title="Diretor de Logística", company_size=120,
         budget=Decimal("20000")),
    dict(state="SP", interest="palete sob medida", job_title="Analista", company_size=10, budget=Decimal("9000")),
    dict(state="RJ", interest="paletes", job_title="Gerente", company_size=500, budget=Decimal("90000")),
    dict(state="SP", interest="manutenção de elevadores", job_title="Sócio", company_size=80),
    dict(state="SP", interest="PALETES de madeira", job_title="Gerente de compras", budget=Decimal("1000")),
]


def make_leads():
    return [LeadFactory(email=f"p{i}@x.com.br", **person) for i, person in enumerate(PEOPLE)]


def change_url(ruleset):
    return reverse("admin:scoring_ruleset_change", args=[ruleset.pk])


def ruleset_post_data(ruleset, rules):
    """The change form as a browser posts it: the ruleset's fields and new inline rules."""
    data = {
        "name": ruleset.name, "description": ruleset.description,
        "qualify_threshold": ruleset.qualify_threshold, "warm_threshold": ruleset.warm_threshold,
        "hot_threshold": ruleset.hot_threshold, "engagement_half_life_days": ruleset.engagement_half_life_days,
        "submission_points": 0, "email_open_points": 0, "email_click_points": 0,
        "rules-TOTAL_FORMS": len(rules), "rules-INITIAL_FORMS": 0, "rules-MIN_NUM_FORMS": 0,
        "rules-MAX_NUM_FORMS": 1000,
    }
    for index, rule in enumerate(rules):
        row = {"order": index, "name": f"rule {index}", "window_days": 30, "effect": "points", "points": 10,
               "reason": "", "active": "on", **rule}
        data.update({f"rules-{index}-{key}": value for key, value in row.items()})
    return data


def inline_errors(response):
    formset = response.context["inline_admin_formsets"][0].formset
    return [form.errors for form in formset.forms]


def test_ruleset_pages_render_for_every_state(admin_client):
    draft = pallet_ruleset()
    active = pallet_ruleset(state=Ruleset.State.ACTIVE)
    listing = admin_client.get(reverse("admin:scoring_ruleset_changelist"))
    assert listing.status_code == 200
    assert b"40 / 40 / 70" in listing.content
    assert b"5 (5)" in listing.content  # rules (active)
    assert admin_client.get(reverse("admin:scoring_ruleset_add")).status_code == 200
    page = admin_client.get(change_url(draft))
    assert page.status_code == 200
    assert b'<option value="company_size" selected>Company size</option>' in page.content
    assert b'a list separated by commas (SP, RJ)' in page.content
    assert b"<dt>has its domain among</dt><dd><code>email_domain_in</code></dd>" in page.content
    assert reverse("admin:scoring_ruleset_impact", args=[draft.pk]).encode() in page.content
    read_only = admin_client.get(change_url(active))
    assert read_only.status_code == 200
    assert b"read-only" in read_only.content
    assert b'name="rules-0-operator"' not in read_only.content
    assert reverse("admin:scoring_ruleset_duplicate", args=[active.pk]).encode() in read_only.content
    assert reverse("admin:scoring_ruleset_impact", args=[active.pk]).encode() not in read_only.content


def test_a_marketer_can_preview_and_activate(client, marketer):
    client.force_login(marketer)
    draft = pallet_ruleset()
    assert client.get(change_url(draft)).status_code == 200
    assert client.get(reverse("admin:scoring_ruleset_impact", args=[draft.pk])).status_code == 200
    response = client.post(reverse("admin:scoring_ruleset_activate", args=[draft.pk]))
    assert response.status_code == 302


def test_a_sales_rep_cannot_activate(client, rep):
    rep.is_staff = True
    rep.save()
    client.force_login(rep)
    draft = pallet_ruleset()
    response = client.post(reverse("admin:scoring_ruleset_activate", args=[draft.pk]))
    assert response.status_code == 403
    draft.refresh_from_db()
    assert draft.state == Ruleset.State.DRAFT


def test_the_rule_inline_saves_good_rules_and_reads_plain_text_values(admin_client):
    draft = Ruleset.objects.create(name="Paletes SP")
    no_budget = reason("no_budget", "Sem orçamento agora")
    data = ruleset_post_data(draft, [
        {"field": "interest", "operator": "contains", "value": "palete"},
        {"field": "state", "operator": "in", "value": '["SP", "RJ"]'},
        {"field": "budget", "operator": "lt", "value": "5000", "effect": "disqualified", "reason": no_budget.pk},
        {"field": "attributes.frota", "operator": "gte", "value": "10"},
        {"field": "email_clicks", "operator": "between", "value": "[1, 5]", "window_days": 14},
    ])
    response = admin_client.post(change_url(draft), data)
    assert response.status_code == 302, inline_errors(response)
    values = list(draft.rules.order_by("order").values_list("field", "value"))
    assert values == [("interest", "palete"), ("state", ["SP", "RJ"]), ("budget", 5000), ("attributes.frota", 10),
                      ("email_clicks", [1, 5])]
    page = admin_client.get(change_url(draft))
    assert b'name="rules-0-value" value="palete"' in page.content
    assert b'name="rules-1-value" value="SP, RJ"' in page.content
    assert b'name="rules-2-value" value="5,000"' in page.content


@pytest.mark.parametrize("rule, field, message", [
    ({"field": "budget", "operator": "contains", "value": "5000"}, "operator", "does not fit the field"),
    ({"field": "state", "operator": "matches", "value": "(SP"}, "value", "does not compile"),
    ({"field": "state", "operator": "in", "value": "[]"}, "value", "non-empty list"),
    ({"field": "budget", "operator": "gt", "value": "muito"}, "value", "is not a number"),
    ({"field": "cargo", "operator": "equals", "value": "diretor"}, "field", "Unknown field"),
    ({"field": "state", "operator": "in", "value": '["SP", '}, "value", "valid JSON"),
    ({"field": "state", "operator": "not_in", "value": '["SP"]', "effect": "out_of_focus"}, "reason",
     "needs the reason"),
])
def test_the_rule_inline_refuses_a_bad_rule_on_the_field_at_fault(admin_client, rule, field, message):
    draft = Ruleset.objects.create(name="Paletes SP")
    response = admin_client.post(change_url(draft), ruleset_post_data(draft, [rule]))
    assert response.status_code == 200
    errors = inline_errors(response)[0]
    assert field in errors, errors
    assert message in " ".join(errors[field])
    assert not draft.rules.exists()


def test_active_and_archived_rulesets_cannot_be_changed_or_deleted(admin_client):
    active = pallet_ruleset(state=Ruleset.State.ACTIVE)
    data = ruleset_post_data(active, [])
    data["qualify_threshold"] = 0
    assert admin_client.post(change_url(active), data).status_code == 403
    assert admin_client.post(reverse("admin:scoring_ruleset_delete", args=[active.pk]), {"post": "yes"}).status_code \
        == 403
    active.refresh_from_db()
    assert active.qualify_threshold == 40


def test_duplicate_as_new_draft_copies_the_settings_and_every_rule(admin_client):
    services.ruleset_activate(ruleset=pallet_ruleset())
    active = Ruleset.objects.get(state=Ruleset.State.ACTIVE)
    Rule.objects.filter(ruleset=active, name="Decisor").update(active=False)
    response = admin_client.post(reverse("admin:scoring_ruleset_duplicate", args=[active.pk]))
    copy = Ruleset.objects.exclude(pk=active.pk).get()
    assert response.status_code == 302
    assert response["Location"] == change_url(copy)
    assert (copy.state, copy.name, copy.version) == (Ruleset.State.DRAFT, active.name, active.version + 1)
    assert copy.qualify_threshold == active.qualify_threshold
    fields = ["order", "name", "field", "operator", "value", "effect", "points", "reason", "window_days", "active"]
    assert list(copy.rules.order_by("order").values_list(*fields)) == list(
        active.rules.order_by("order").values_list(*fields)
    )
    # The original is untouched, and the action on the list does the same.
    assert active.rules.count() == 5
    admin_client.post(reverse("admin:scoring_ruleset_changelist"),
                      {"action": "duplicate_as_draft", "_selected_action": [active.pk]})
    assert Ruleset.objects.filter(state=Ruleset.State.DRAFT).count() == 2


def test_the_impact_page_shows_the_numbers_ruleset_impact_computes(admin_client):
    make_leads()
    draft = pallet_ruleset()
    expected = services.ruleset_impact(ruleset=draft)
    page = admin_client.get(reverse("admin:scoring_ruleset_impact", args=[draft.pk]))
    assert page.status_code == 200
    table = page.context["status_table"]
    shown = {}
    for row_value, row in zip([r["label"] for r in table["rows"]], table["rows"], strict=True):
        for column, cell in zip(table["columns"], row["cells"], strict=True):
            if cell["count"]:
                shown[(str(row_value), str(column))] = cell["count"]
    labels = dict(LeadStatus.choices)
    assert shown == {(str(labels[old]), str(labels[new])): count for (old, new), count in expected["status"].items()}
    assert table["total"] == len(PEOPLE) == page.context["total"]
    assert page.context["status_moves"] == len(PEOPLE)  # every lead is new now
    temperatures = page.context["temperature_table"]
    assert temperatures["total"] == sum(expected["temperature"].values())
    assert temperatures["moved"] == sum(c for (a, b), c in expected["temperature"].items() if a != b)
    samples = {(str(move["from"]), str(move["to"])): move["leads"] for move in page.context["samples"]}
    [qualified] = samples[("New", "Qualified")]
    assert qualified["lead"].email == "p0@x.com.br"
    # Each sample says what the draft gives it and why.
    assert (qualified["old_score"], qualified["new_score"]) == (0, 50)
    assert qualified["why"] == "50 points, at least 40" and qualified["points"] == "Decisor +30, Empresa média +20"
    [far] = samples[("New", "Out of focus")][:1]
    assert far["why"] == "Fora de SP (State (UF): RJ) → Fora da área de atendimento"
    assert "Why: 50 points, at least 40 · Decisor +30, Empresa média +20" in page.content.decode()
    # Moving cells are shaded by their share of the largest move: a gain for sales in green.
    new_row = table["rows"][[str(r["label"]) for r in table["rows"]].index("New")]
    qualified_cell = new_row["cells"][[str(c) for c in table["columns"]].index("Qualified")]
    assert qualified_cell["tone"] == "gain" and "rgba(46, 125, 50" in qualified_cell["style"]
    assert reverse("admin:leads_lead_change", args=[Lead.objects.get(email="p0@x.com.br").pk]).encode() \
        in page.content
    assert b'class="same"' in page.content
    assert b'name="csrfmiddlewaretoken"' in page.content
    # Nothing was written.
    assert set(Lead.objects.values_list("status", flat=True)) == {LeadStatus.NEW}


def test_activating_from_the_impact_page_starts_the_job_and_archives_the_previous_ruleset(admin_client):
    make_leads()
    previous = pallet_ruleset()
    services.ruleset_activate(ruleset=previous)
    draft = services.ruleset_duplicate(ruleset=previous)
    assert admin_client.get(reverse("admin:scoring_ruleset_activate", args=[draft.pk])).status_code == 405
    response = admin_client.post(reverse("admin:scoring_ruleset_activate", args=[draft.pk]))
    job = RescoreJob.objects.get(ruleset=draft)
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:scoring_rescorejob_progress", args=[job.pk])
    previous.refresh_from_db()
    draft.refresh_from_db()
    assert (previous.state, draft.state) == (Ruleset.State.ARCHIVED, Ruleset.State.ACTIVE)
    assert (job.kind, job.status) == (RescoreJob.Kind.ACTIVATION, RescoreJob.Status.PENDING)
    # The ruleset's page links to its jobs.
    assert f'<a href="{response["Location"]}">#{job.pk} · Ruleset activated · Pending'.encode() in \
        admin_client.get(change_url(draft)).content
    # Activating it again is refused with a message, not an error page.
    again = admin_client.post(reverse("admin:scoring_ruleset_activate", args=[draft.pk]), follow=True)
    assert b"already active" in again.content
    assert RescoreJob.objects.filter(ruleset=draft).count() == 1


def test_the_progress_page_refreshes_while_pending_and_says_when_the_worker_seems_down(admin_client):
    job = services.ruleset_activate(ruleset=pallet_ruleset())
    url = reverse("admin:scoring_rescorejob_progress", args=[job.pk])
    page = admin_client.get(url)
    assert page.status_code == 200
    assert b'http-equiv="refresh" content="2"' in page.content
    assert b"worker seems down" not in page.content
    RescoreJob.objects.filter(pk=job.pk).update(created_at=timezone.now() - timezone.timedelta(minutes=3))
    assert b"worker seems down" in admin_client.get(url).content


def test_the_progress_page_shows_a_running_job_and_then_its_result(admin_client):
    make_leads()
    job = services.ruleset_activate(ruleset=pallet_ruleset())
    now = timezone.now()
    RescoreJob.objects.filter(pk=job.pk).update(
        status=RescoreJob.Status.RUNNING, started_at=now, heartbeat_at=now, first_id=0, last_id=100,
        done_through_id=40, leads_seen=40, transitions={"status:new>qualified": 7},
    )
    url = reverse("admin:scoring_rescorejob_progress", args=[job.pk])
    page = admin_client.get(url)
    assert b'aria-valuenow="40"' in page.content
    assert b'http-equiv="refresh"' in page.content
    RescoreJob.objects.filter(pk=job.pk).update(status=RescoreJob.Status.PENDING, last_id=0, leads_seen=0,
                                               transitions={})
    services.rescore_job_run(job_id=job.pk)
    page = admin_client.get(url)
    content = page.content.decode()
    assert 'aria-valuenow="100"' in content
    assert 'http-equiv="refresh"' not in content
    assert page.context["status_moves"] == [
        {"from": "New", "to": "Disqualified", "count": 2}, {"from": "New", "to": "Out of focus", "count": 2},
        {"from": "New", "to": "Qualified", "count": 1},
    ]
    assert any(row["from"] == "Cold" for row in page.context["temperature_moves"])
    assert "<td>New</td><td>→</td><td>Qualified</td>" in content
    # The job list and the job's own admin page lead here.
    assert admin_client.get(reverse("admin:scoring_rescorejob_changelist")).status_code == 200
    assert admin_client.get(reverse("admin:scoring_rescorejob_change", args=[job.pk]))["Location"] == url


def test_a_failed_job_shows_its_error(admin_client):
    job = services.ruleset_activate(ruleset=pallet_ruleset())
    RescoreJob.objects.filter(pk=job.pk).update(status=RescoreJob.Status.FAILED, error="division by zero")
    page = admin_client.get(reverse("admin:scoring_rescorejob_progress", args=[job.pk]))
    assert b"division by zero" in page.content
    assert b'http-equiv="refresh"' not in page.content
