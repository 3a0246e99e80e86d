import unicodedata
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db.models import F, Sum

from leads import roles
from leads.models import (
    Form,
    Lead,
    LeadEvent,
    LeadRuleMatches,
    LeadStatus,
    RuleMatchDay,
    SpendRecord,
    Temperature,
)
from nurturing.models import Sequence
from scoring.models import Ruleset

pytestmark = pytest.mark.django_db


def seed(**options):
    out = StringIO()
    call_command("seed_demo", stdout=out, **options)
    return out.getvalue()


def test_the_demo_spreads_leads_over_every_status_and_temperature_with_timelines():
    seed(leads=120)

    assert Ruleset.objects.get(state=Ruleset.State.ACTIVE).name == "Paletes SP"
    assert set(Lead.objects.values_list("status", flat=True)) == set(LeadStatus.values)
    assert set(Lead.objects.values_list("temperature", flat=True)) == set(Temperature.values)
    # Out of focus for the reasons the rules give: outside São Paulo, or not a pallet buyer.
    outside = Lead.objects.filter(status=LeadStatus.OUT_OF_FOCUS).exclude(state__in=["SP", ""])
    assert outside.exists() and all(lead.reason.slug == "outside_service_area" for lead in outside)
    assert not Lead.objects.filter(events__isnull=True).exists()
    assert LeadEvent.objects.filter(kind=LeadEvent.Kind.ASSIGNED).exists()
    assert Lead.objects.filter(status=LeadStatus.CONVERTED, deal_value__gt=0).exists()
    assert Lead.objects.filter(created_at__lt=Lead.objects.latest("created_at").created_at).count() > 100
    # What the dashboard and nurturing need to show something: spend, sales' ratings, a sequence.
    assert SpendRecord.objects.filter(source__slug="instagram").count() == 5
    assert set(Lead.objects.exclude(fit="").values_list("fit", flat=True)) == {"good", "bad"}
    touched = Lead.objects.filter(first_touched_at__isnull=False)
    assert touched.exists() and not touched.filter(first_touched_at__lt=F("qualified_at")).exists()
    assert Sequence.objects.get(slug="sem-orcamento", active=True).steps.count() == 3
    # The rule matches are evaluated at once, so the dashboard's rule effectiveness is not empty.
    assert LeadRuleMatches.objects.count() == Lead.objects.count()
    assert RuleMatchDay.objects.filter(rule_index=-1).aggregate(n=Sum("leads"))["n"] == Lead.objects.count()


def test_demo_email_addresses_spell_names_without_accents_rather_than_dropping_letters():
    seed(leads=120)
    accented = Lead.objects.filter(first_name__in=["Otávio", "Vinícius", "Patrícia", "Natália", "André", "João"])
    checked = 0
    for lead in accented.exclude(email__isnull=True):
        local = lead.email.split("@")[0]
        if local.count(".") >= 1 and not local.startswith("contato"):
            spelled = unicodedata.normalize("NFKD", lead.first_name).encode("ascii", "ignore").decode().lower()
            assert local.startswith(spelled), lead.email
            checked += 1
    assert checked
    assert all(email.isascii() for email in Lead.objects.exclude(email__isnull=True).values_list("email", flat=True))


def test_the_demo_users_have_their_roles_and_can_log_in(client):
    seed(leads=10)
    assert User.objects.get(username="admin").is_superuser
    assert User.objects.get(username="gerente").groups.filter(name=roles.SALES_MANAGERS).exists()
    assert User.objects.get(username="ana").groups.filter(name=roles.SALES).exists()
    assert User.objects.get(username="marketing").groups.filter(name=roles.MARKETING).exists()
    assert client.login(username="ana", password="funil-demo")


def test_running_the_demo_again_changes_nothing():
    seed(leads=30)
    before = (Lead.objects.count(), LeadEvent.objects.count(), Form.objects.count(), Ruleset.objects.count())
    out = seed(leads=30)
    assert "already loaded" in out
    assert (Lead.objects.count(), LeadEvent.objects.count(), Form.objects.count(), Ruleset.objects.count()) == before
