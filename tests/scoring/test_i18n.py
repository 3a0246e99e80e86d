"""The marketer's pages read in Portuguese. The scoring app's own pt-BR catalogue is checked
(complete, placeholders kept, compiled) with the other three in tests/config/test_i18n.py."""

import pytest
from django.urls import reverse

from scoring import services
from tests.config.test_i18n import _restore_language  # noqa: F401 (autouse)

from ..factories import LeadFactory
from .factories import pallet_ruleset


@pytest.mark.django_db
def test_the_ruleset_pages_read_in_portuguese(admin_client):
    LeadFactory(state="SP", interest="paletes", job_title="Diretor", company_size=80)
    draft = pallet_ruleset()
    portuguese = {"HTTP_ACCEPT_LANGUAGE": "pt-BR"}
    impact = admin_client.get(reverse("admin:scoring_ruleset_impact", args=[draft.pk]), **portuguese).content.decode()
    assert "Impacto de ativar" in impact and "Por quê:" in impact and "Leads de exemplo de cada mudança" in impact
    change = admin_client.get(reverse("admin:scoring_ruleset_change", args=[draft.pk]), **portuguese).content.decode()
    assert "Ver impacto e ativar" in change and "Eliminatório: fora de foco" in change and "Limiares" in change
    job = services.ruleset_activate(ruleset=draft)
    progress = admin_client.get(reverse("admin:scoring_rescorejob_progress", args=[job.pk]), **portuguese)
    assert "Reavaliação nº" in progress.content.decode()


@pytest.mark.django_db
def test_a_wrong_rule_is_explained_in_portuguese(marketer, client):
    from django.utils import translation

    from scoring.models import Rule

    draft = pallet_ruleset()
    with translation.override("pt-br"):
        rule = Rule(ruleset=draft, name="Ruim", field="budget", operator="contains", value="5", effect="points")
        with pytest.raises(Exception) as caught:
            rule.full_clean()
        assert caught.value.message_dict["operator"] == ["O operador 'contains' não serve para o campo 'budget'."]
    with translation.override("en"):
        with pytest.raises(Exception) as caught:
            rule.full_clean()
        assert caught.value.message_dict["operator"] == ["The operator 'contains' does not fit the field 'budget'."]


@pytest.mark.django_db
@pytest.mark.parametrize(("language", "label"), [("en", "Below the qualification threshold"),
                                                  ("pt-br", "Abaixo da pontuação mínima")])
def test_the_rules_own_reason_is_created_in_the_sites_language_and_then_is_data(settings, language, label):
    from django.utils import timezone, translation

    from leads.models import Reason

    settings.LANGUAGE_CODE = language
    ruleset = pallet_ruleset()
    with translation.override("en" if language == "pt-br" else "pt-br"):  # whatever the request's language
        services.compile_ruleset(ruleset, now=timezone.now())
    reason = Reason.objects.filter(slug="below_threshold").first()
    assert reason.label == label
    Reason.objects.filter(pk=reason.pk).update(label="Pontuação baixa")  # a marketer renamed it
    services.compile_ruleset(ruleset, now=timezone.now())
    assert Reason.objects.filter(slug="below_threshold").first().label == "Pontuação baixa"
