from leads.models import Reason
from scoring.models import Rule, Ruleset


def reason(slug, label, kind=Reason.Kind.BOTH):
    return Reason.objects.get_or_create(slug=slug, defaults={"label": label, "kind": kind})[0]


def pallet_ruleset(state=Ruleset.State.DRAFT, **overrides):
    """The wooden-pallet company that serves only São Paulo (DOMAIN.md, issue 4)."""
    ruleset = Ruleset.objects.create(
        name="Paletes SP", qualify_threshold=40, warm_threshold=40, hot_threshold=70,
        engagement_half_life_days=30, **overrides,
    )
    if state == Ruleset.State.ACTIVE:
        Ruleset.objects.filter(pk=ruleset.pk).update(state=state)
        ruleset.refresh_from_db()
    outside = reason("outside_service_area", "Fora da área de atendimento", Reason.Kind.OUT_OF_FOCUS)
    not_served = reason("need_not_served", "Procura o que não vendemos", Reason.Kind.OUT_OF_FOCUS)
    no_budget = reason("no_budget", "Sem orçamento agora", Reason.Kind.DISQUALIFIED)
    rules = [
        dict(name="Fora de SP", field="state", operator="not_in", value=["SP"], effect="out_of_focus", reason=outside),
        dict(name="Não é palete", field="interest", operator="not_contains", value="palete", effect="out_of_focus",
             reason=not_served),
        dict(name="Sem orçamento", field="budget", operator="lt", value=5000, effect="disqualified", reason=no_budget),
        dict(name="Decisor", field="job_title", operator="contains_any", value=["diretor", "gerente", "sócio", "ceo"],
             effect="points", points=30),
        dict(name="Empresa média", field="company_size", operator="gte", value=50, effect="points", points=20),
    ]
    for order, rule in enumerate(rules):
        Rule.objects.create(ruleset=ruleset, order=order, **rule)
    return ruleset
