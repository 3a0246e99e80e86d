"""Every dashboard figure equals the one computed by hand over a known set of leads."""

import csv
import io
import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone, translation

from leads import reports, services
from leads.models import Lead, LeadStatus, SpendRecord
from scoring import services as scoring_services
from tests.factories import LeadFactory, ReasonFactory, SourceFactory
from tests.scoring.factories import pallet_ruleset

pytestmark = pytest.mark.django_db

HOUR = 3600
FITS = dict(state="SP", interest="Paletes PBR", job_title="Diretor de Logística", company_size=120,
            budget=Decimal("20000"))


def backdate(lead, **stamps):
    """History the fixture needs (services stamp 'now'): move this lead's timestamps."""
    Lead.objects.filter(pk=lead.pk).update(**stamps)
    lead.refresh_from_db()
    return lead


@pytest.fixture
def world(manager, rep):
    """Seven leads with a known history; six of them captured in the period."""
    ruleset = pallet_ruleset()
    scoring_services.rescore_job_run(job_id=scoring_services.ruleset_activate(ruleset=ruleset).pk)
    site = SourceFactory(slug="site", name="Site")
    ads = SourceFactory(slug="ads", name="Anúncios")
    no_budget = ReasonFactory(slug="no_budget", label="Sem orçamento agora", kind="disqualified")
    outside = ReasonFactory(slug="outside_service_area", kind="out_of_focus")
    now = timezone.now()
    t0 = now - timedelta(days=10)
    period = reports.Period(start=timezone.localdate(now - timedelta(days=20)), end=timezone.localdate(now))

    def lead(name, source, **fields):
        return LeadFactory(email=f"{name}@cliente.com.br", first_name=name, source=source, **fields)

    l1 = lead("l1", site, **FITS)
    services.lead_change_status(lead=l1, status=LeadStatus.QUALIFIED)
    services.lead_change_status(lead=l1, status=LeadStatus.CONVERTED, actor=manager, deal_value=Decimal("10000"))
    backdate(l1, created_at=t0, qualified_at=t0 + timedelta(hours=2), first_touched_at=t0 + timedelta(hours=3),
             fit="good", owner=rep)
    l2 = lead("l2", site, state="SP", interest="paletes", job_title="Gerente de compras", company_size=10)
    services.lead_change_status(lead=l2, status=LeadStatus.QUALIFIED)
    backdate(l2, created_at=t0, qualified_at=t0 + timedelta(hours=4), first_touched_at=t0 + timedelta(hours=7),
             fit="bad", owner=rep)
    l3 = lead("l3", site, state="SP", interest="paletes", budget=Decimal("1000"))
    services.lead_change_status(lead=l3, status=LeadStatus.DISQUALIFIED, reason=no_budget)
    backdate(l3, created_at=t0)
    l4 = lead("l4", ads, state="SP", interest="palete", job_title="Gerente", utm_campaign="promo")
    services.lead_change_status(lead=l4, status=LeadStatus.QUALIFIED)
    backdate(l4, created_at=t0, qualified_at=t0 + timedelta(hours=10))
    l5 = lead("l5", ads, state="RJ", interest="paletes", utm_campaign="promo")
    services.lead_change_status(lead=l5, status=LeadStatus.OUT_OF_FOCUS, reason=outside)
    backdate(l5, created_at=t0)
    l6 = lead("l6", ads, state="SP", interest="caixas")
    backdate(l6, created_at=t0)
    # Captured long before the period: counted only by requalification (its event is in the period).
    old = lead("old", site, **FITS)
    services.lead_change_status(lead=old, status=LeadStatus.DISQUALIFIED, reason=no_budget)
    backdate(old, created_at=now - timedelta(days=200))
    result = scoring_services.requalify_run()
    assert result["qualified"] == 1
    services.lead_change_status(lead=old, status=LeadStatus.CONVERTED, actor=manager, deal_value=Decimal("5000"))
    month = period.start.replace(day=1)
    SpendRecord.objects.create(month=month, source=site, amount=Decimal("1000"))
    SpendRecord.objects.create(month=period.end.replace(day=1), utm_campaign="promo", amount=Decimal("500"))
    SpendRecord.objects.create(month=(month - timedelta(days=40)).replace(day=1), source=site, amount=Decimal("999"))
    reports.rule_matches_refresh()
    return {"period": period, "site": site, "ads": ads, "ruleset": ruleset}


def test_funnel_counts_and_rates_match_the_hand_count(world):
    total = reports.dashboard(period=world["period"]).total
    assert (total.captured, total.qualified, total.converted) == (6, 3, 1)
    assert (total.disqualified, total.out_of_focus, total.new) == (1, 1, 1)
    assert total.qualification_rate == Decimal(3) / 6
    assert total.conversion_rate == Decimal(1) / 3
    assert total.overall_rate == Decimal(1) / 6


def test_mean_and_median_times_to_qualify_and_to_first_touch(world):
    total = reports.dashboard(period=world["period"]).total
    assert total.qualify_mean == pytest.approx((2 + 4 + 10) / 3 * HOUR, abs=1)
    assert total.qualify_median == pytest.approx(4 * HOUR, abs=1)  # odd count: the middle one
    assert total.touch_mean == pytest.approx(2 * HOUR, abs=1)  # 1 h and 3 h
    assert total.touch_median == pytest.approx(2 * HOUR, abs=1)  # even count: mean of the two middle ones


def test_cost_per_lead_per_qualified_lead_and_roi_from_the_period_spend(world):
    total = reports.dashboard(period=world["period"]).total
    assert total.spend == Decimal("1500.00")  # the record of the month before the period is not counted
    assert total.cost_per_lead == Decimal(1500) / 6
    assert total.cost_per_qualified == Decimal(500)
    assert total.deal_value == Decimal("10000.00")
    assert total.roi == (Decimal(10000) - 1500) / 1500


def test_breakdown_by_source_with_its_spend(world):
    groups = {g.label: g for g in reports.dashboard(period=world["period"], breakdown_by="source").groups}
    site, ads = groups["Site"], groups["Anúncios"]
    assert (site.captured, site.qualified, site.converted, site.disqualified) == (3, 2, 1, 1)
    assert (ads.captured, ads.qualified, ads.out_of_focus, ads.new) == (3, 1, 1, 1)
    assert site.spend == Decimal("1000.00") and site.roi == Decimal(9)
    assert site.qualify_median == pytest.approx(3 * HOUR, abs=1)
    assert ads.spend == 0 and ads.roi is None  # the campaign's spend is not the source's


def test_breakdown_by_campaign_and_by_rep(world):
    groups = {g.label: g for g in reports.dashboard(period=world["period"], breakdown_by="utm_campaign").groups}
    assert groups["promo"].captured == 2 and groups["promo"].cost_per_lead == Decimal(250)
    assert groups["No campaign"].captured == 4
    reps = {g.label: g for g in reports.dashboard(period=world["period"], breakdown_by="rep").groups}
    assert reps["Rita Rep"].captured == 2 and reps["Rita Rep"].touch_mean == pytest.approx(2 * HOUR, abs=1)
    assert reps["Unassigned"].captured == 4


def test_reasons_and_their_monthly_trend(world):
    data = reports.dashboard(period=world["period"])
    assert {(r.label, r.status, r.count) for r in data.reasons} == {
        ("Sem orçamento agora", "disqualified", 1), ("Fora da área de atendimento", "out_of_focus", 1)}
    month = timezone.localdate(Lead.objects.get(email="l3@cliente.com.br").created_at).replace(day=1)
    assert data.reasons_trend == {"Sem orçamento agora": {month: 1}, "Fora da área de atendimento": {month: 1}}


def test_quality_ratings_by_source(world):
    assert reports.dashboard(period=world["period"]).quality == [("Site", 1, 1)]


def test_rule_effectiveness_counts_the_leads_each_rule_matches_and_their_outcomes(world):
    rules = {r.name: r for r in reports.dashboard(period=world["period"]).rules}
    outside = rules["Fora de SP"]
    assert (outside.matched, outside.qualified) == (1, 0)  # l5 (RJ)
    deciders = rules["Decisor"]  # l1 Diretor, l2 Gerente de compras, l4 Gerente
    assert (deciders.matched, deciders.qualified, deciders.converted) == (3, 3, 1)
    assert (deciders.good_fit, deciders.bad_fit) == (1, 1)
    assert deciders.qualified_share == 1 and deciders.bad_fit_share == Decimal("0.5")
    not_pallet = rules["Não é palete"]  # l6 asks for "caixas"
    assert not_pallet.matched == 1
    no_budget = rules["Sem orçamento"]  # l3
    assert (no_budget.matched, no_budget.qualified) == (1, 0)
    company = rules["Empresa média"]  # l1 (120)
    assert (company.matched, company.converted) == (1, 1)


def test_rule_matches_are_refreshed_only_for_new_or_changed_leads(world, manager):
    assert reports.rule_matches_refresh() == 0  # nothing changed since the fixture's refresh
    l5 = Lead.objects.get(email="l5@cliente.com.br")
    services.lead_update_contact(lead=l5, actor=manager, fields={"state": "SP"})
    LeadFactory(email="new@cliente.com.br", state="MG", interest="paletes")
    assert reports.rule_matches_refresh() == 2
    data = reports.dashboard(period=world["period"])
    rules = {r.name: r for r in data.rules}
    assert rules["Fora de SP"].matched == 1  # l5 now in SP; the new MG lead is outside
    assert data.rules_coverage["covered"] == data.rules_coverage["cohort"] == 7


def test_rule_effectiveness_of_a_period_is_summed_from_the_days_and_equals_the_live_count(world):
    period = world["period"]
    leads = reports.cohort(period=period)
    _ruleset, by_day, coverage = reports.rule_effectiveness(leads, period=period)
    _ruleset, live, live_coverage = reports.rule_effectiveness(leads)
    assert by_day == live and any(row.matched for row in by_day)
    assert coverage["covered"] == live_coverage["covered"] == 6
    assert coverage["outcomes_at"] is not None and "outcomes_at" not in live_coverage
    # Days outside the period are not summed: a period before every lead matches nothing.
    empty = reports.Period(start=period.start - timedelta(days=400), end=period.start - timedelta(days=300))
    _ruleset, none, coverage = reports.rule_effectiveness(reports.cohort(period=empty), period=empty)
    assert not any(row.matched for row in none) and coverage["covered"] == 0


def test_rule_outcomes_summed_by_day_are_those_of_the_last_refresh(world, manager):
    """A conversion shows in the rule figures once the background refresh has run (the
    page says as of when); a segment's figures are counted live."""
    period = world["period"]
    l4 = Lead.objects.get(email="l4@cliente.com.br")
    services.lead_change_status(lead=l4, status=LeadStatus.CONVERTED, actor=manager, deal_value=Decimal("700"))
    deciders = {r.name: r for r in reports.dashboard(period=period).rules}["Decisor"]
    assert deciders.converted == 1  # as of the fixture's refresh
    segment = reports.dashboard(period=period, base=Lead.objects.all())
    assert {r.name: r for r in segment.rules}["Decisor"].converted == 2  # live
    assert reports.rule_matches_refresh() == 1
    data = reports.dashboard(period=period)
    assert {r.name: r for r in data.rules}["Decisor"].converted == 2
    assert data.rules_coverage["covered"] == data.rules_coverage["cohort"] == 6


def test_leads_not_yet_evaluated_are_reported_as_not_covered(world):
    LeadFactory(email="late@cliente.com.br", state="MG", interest="paletes")
    coverage = reports.dashboard(period=world["period"]).rules_coverage
    assert (coverage["covered"], coverage["cohort"]) == (6, 7)


@pytest.mark.django_db(transaction=True)
def test_on_postgresql_rules_and_breakdown_are_computed_meanwhile_on_other_connections(world, require_postgres,
                                                                                       monkeypatch):
    # Committed data (a transactional test), so that the other connection sees it.
    compute, compute_breakdown, threads = reports.rule_effectiveness, reports.breakdown, []

    def spy(leads, **kwargs):
        threads.append(threading.current_thread().name)
        return compute(leads, **kwargs)

    monkeypatch.setattr(reports, "rule_effectiveness", spy)
    data = reports.dashboard(period=world["period"])
    assert threads == ["dashboard-rules"]
    deciders = {r.name: r for r in data.rules}["Decisor"]
    assert (deciders.matched, deciders.qualified, deciders.converted, deciders.bad_fit) == (3, 3, 1, 1)
    assert data.rules_coverage["covered"] == data.rules_coverage["cohort"] == 6
    assert data.total.captured == 6
    serial = reports.dashboard(period=world["period"], concurrent=False)
    assert threads[1:] == [threading.current_thread().name]
    assert serial.rules == data.rules and serial.rules_coverage == data.rules_coverage

    # The breakdown too, in the caller's language.
    def spy_breakdown(*args):
        threads.append(threading.current_thread().name)
        return compute_breakdown(*args)

    monkeypatch.setattr(reports, "breakdown", spy_breakdown)
    with translation.override("pt-br"):
        groups = {g.label: g for g in reports.dashboard(period=world["period"], breakdown_by="utm_campaign").groups}
    assert sorted(threads[2:]) == ["dashboard-breakdown", "dashboard-rules"]
    assert groups["promo"].captured == 2 and groups["Sem campanha"].captured == 4

    def broken(leads, **kwargs):
        raise RuntimeError("rules failed")

    monkeypatch.setattr(reports, "rule_effectiveness", broken)
    with pytest.raises(RuntimeError, match="rules failed"):
        reports.dashboard(period=world["period"])


def test_requalified_leads_and_their_conversions(world):
    rq = reports.dashboard(period=world["period"]).requalification
    assert (rq["requalified"], rq["converted"]) == (1, 1)
    assert rq["deal_value"] == Decimal("5000.00")


def test_a_segment_narrows_every_figure(world):
    from nurturing.services import segment_save

    segment = segment_save(name="Só anúncios", filters={"source": "ads"})
    from nurturing.selectors import segment_leads

    total = reports.dashboard(period=world["period"], base=segment_leads(segment=segment)).total
    assert (total.captured, total.qualified) == (3, 1)


def test_the_dashboard_page_shows_charts_with_their_numbers(client, world, manager):
    client.force_login(manager)
    period = world["period"]
    response = client.get(reverse("insights:dashboard"), {"start": period.start, "end": period.end,
                                                          "breakdown": "source"})
    assert response.status_code == 200
    html = response.content.decode()
    assert html.count("<svg") >= 8 and "<title" in html and "<desc" in html
    assert 'id="chart-breakdown"' in html and "Anúncios" in html
    # The bars' figures in the reader's format: the deal value of the period's cohort, 10,000.
    money = html[html.index('id="chart-money"'):html.index("</svg>", html.index('id="chart-money"'))]
    assert ">10,000<" in money
    client.post(reverse("set_language"), {"language": "pt-br", "next": "/"})
    html = client.get(reverse("insights:dashboard"), {"start": period.start, "end": period.end}).content.decode()
    money = html[html.index('id="chart-money"'):html.index("</svg>", html.index('id="chart-money"'))]
    assert ">10.000<" in money


def test_a_chart_downloads_as_csv_with_the_same_numbers(client, world, marketer):
    client.force_login(marketer)
    period = world["period"]
    response = client.get(reverse("insights:dashboard-csv", args=["funnel"]),
                          {"start": period.start, "end": period.end})
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.content.decode().removeprefix("\ufeff"))))
    assert rows[0][:2] == ["Stage", "Leads"]
    assert [row[1] for row in rows[1:4]] == ["6", "3", "1"]


def test_a_chart_csv_opens_right_in_the_readers_spreadsheet(client, world, marketer):
    client.force_login(marketer)
    period = {"start": world["period"].start, "end": world["period"].end}
    text = client.get(reverse("insights:dashboard-csv", args=["funnel"]), period,
                      HTTP_ACCEPT_LANGUAGE="pt-BR").content.decode("utf-8")
    assert text.startswith("\ufeff")  # else Excel reads UTF-8 as cp1252
    rows = list(csv.reader(io.StringIO(text[1:]), delimiter=";"))
    assert rows[0][:2] == ["Etapa", "Leads"]
    assert [row[1] for row in rows[1:4]] == ["6", "3", "1"]
    assert rows[2][2] == "0,5000"  # half of the captured leads qualified, with a decimal comma
    text = client.get(reverse("insights:dashboard-csv", args=["funnel"]), period).content.decode("utf-8")
    rows = list(csv.reader(io.StringIO(text[1:])))
    assert rows[2][2] == "0.5000"


def test_reps_may_not_see_the_dashboard(client, world, rep):
    client.force_login(rep)
    assert client.get(reverse("insights:dashboard")).status_code == 403
    assert client.get(reverse("insights:dashboard-csv", args=["funnel"])).status_code == 403


def test_bad_parameters_answer_with_the_form_errors_not_a_500(client, manager):
    client.force_login(manager)
    response = client.get(reverse("insights:dashboard"), {"start": "2026-05-01", "end": "2026-01-01"})
    assert response.status_code == 200 and "must start before it ends" in response.content.decode()
    response = client.get(reverse("insights:dashboard-csv", args=["funnel"]), {"start": "garbage"})
    assert response.status_code == 400
    response = client.get(reverse("insights:dashboard-csv", args=["nope"]))
    assert response.status_code == 404


def test_an_empty_period_renders_without_figures(client, manager):
    client.force_login(manager)
    response = client.get(reverse("insights:dashboard"))
    assert response.status_code == 200


def test_the_dashboard_speaks_portuguese_to_a_pt_br_browser(client, world, manager):
    client.force_login(manager)
    response = client.get(reverse("insights:dashboard"), HTTP_ACCEPT_LANGUAGE="pt-BR")
    html = response.content.decode()
    assert "Painel" in html and "Eficácia das regras" in html and "Baixar “Funil” em CSV" in html


def test_the_page_and_its_csv_share_figures_computed_once_for_five_minutes(client, world, manager):
    client.force_login(manager)
    period = {"start": world["period"].start, "end": world["period"].end}
    assert "Figures computed at" in client.get(reverse("insights:dashboard"), period).content.decode()
    LeadFactory(email="later@cliente.com.br")  # captured after the page was computed
    rows = list(csv.reader(io.StringIO(client.get(reverse("insights:dashboard-csv", args=["funnel"]),
                                                  period).content.decode().removeprefix("\ufeff"))))
    assert rows[1][1] == "6"  # the figures the page showed, not recomputed
    from django.core.cache import cache

    cache.clear()
    rows = list(csv.reader(io.StringIO(client.get(reverse("insights:dashboard-csv", args=["funnel"]),
                                                  period).content.decode().removeprefix("\ufeff"))))
    assert rows[1][1] == "7"


def test_a_breakdown_beyond_its_largest_groups_counts_and_times_the_others_together(db):
    now = timezone.now()
    t0 = now - timedelta(days=2)
    period = reports.Period(start=timezone.localdate(now - timedelta(days=5)), end=timezone.localdate(now))
    for i in range(reports.MAX_GROUPS + 2):
        # The largest groups have two leads each; the last two groups one each.
        for j in range(2 if i < reports.MAX_GROUPS else 1):
            lead = LeadFactory(email=f"g{i}.{j}@x.com.br", interest=f"interesse {i:02}")
            backdate(lead, created_at=t0, qualified_at=t0 + timedelta(hours=i + 1),
                     first_touched_at=t0 + timedelta(hours=i + 1 + j))
    data = reports.dashboard(period=period, breakdown_by="interest")
    groups = {g.label: g for g in data.groups}
    assert len(data.groups) == reports.MAX_GROUPS + 1
    other = groups["Other"]
    assert (other.captured, other.qualified) == (2, 2)
    assert other.qualify_median == pytest.approx(26.5 * HOUR, abs=1)  # 26 h and 27 h
    assert other.qualify_mean == pytest.approx(26.5 * HOUR, abs=1)
    assert other.touch_median == pytest.approx(0, abs=1)
    first = groups["interesse 00"]
    assert (first.captured, first.qualify_median, first.touch_mean) == (2, pytest.approx(HOUR, abs=1),
                                                                        pytest.approx(HOUR / 2, abs=1))
    # The cohort's times, whichever pass gave them, are those of every lead.
    assert data.total.qualify_median == pytest.approx(13.5 * HOUR, abs=1)
    alone = reports.times(reports.cohort(period=period))
    assert data.total.qualify_mean == pytest.approx(alone["qualify_mean"])
    assert data.total.touch_median == pytest.approx(alone["touch_median"])


def test_a_lead_the_rules_qualify_at_capture_counts_in_time_to_qualify_as_zero(client):
    """The capture stamps qualified_at a few milliseconds before the row's created_at:
    such a lead counted in no time-to-qualify figure, so the dashboard showed "–"."""
    from tests.factories import FormFactory

    scoring_services.ruleset_activate(ruleset=pallet_ruleset())
    form = FormFactory(slug="orcamento", fields=["name", "email", "state", "interest", "job_title", "company_size",
                                                 "budget"])
    response = client.post(f"/api/v1/forms/{form.slug}/submissions/", {
        "name": "Rita Lopes", "email": "rita@paletes.com.br", "state": "SP", "interest": "Paletes PBR",
        "job_title": "Diretor de Logística", "company_size": "120", "budget": "20.000"},
        content_type="application/json", HTTP_ACCEPT="application/json")
    assert response.status_code == 202
    lead = Lead.objects.get(email="rita@paletes.com.br")
    assert lead.status == LeadStatus.QUALIFIED and lead.qualified_at is not None
    today = timezone.localdate()
    total = reports.dashboard(period=reports.Period(start=today - timedelta(days=1), end=today)).total
    assert total.qualified == 1
    assert total.qualify_mean == pytest.approx(0, abs=1) and total.qualify_median == pytest.approx(0, abs=1)
    assert total.qualify_mean >= 0


def test_a_chart_with_only_zeros_says_so_instead_of_drawing_slivers(client, world, manager):
    client.force_login(manager)
    period = world["period"]
    drawn = client.get(reverse("insights:dashboard"), {"start": period.start, "end": period.end}).content.decode()
    funnel = drawn[drawn.index('id="chart-funnel"'):]
    assert "<svg" in funnel[:funnel.index("</section>")]
    # A period before any lead: the funnel is all zeros.
    empty = client.get(reverse("insights:dashboard"), {"start": "2001-01-01", "end": "2001-01-31"}).content.decode()
    funnel = empty[empty.index('id="chart-funnel"'):]
    funnel = funnel[:funnel.index("</section>")]
    assert "<svg" not in funnel and "Nothing to show for this period." in funnel
    assert '<td class="num">0</td>' in funnel  # the numbers stay in the table
