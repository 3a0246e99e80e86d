"""The scoring app's own pt-BR catalogue is complete and compiled, and the marketer's
pages read in Portuguese."""

import gettext
import re
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse

from scoring import services
from tests.config.test_i18n import _catalog_key, _live, _restore_language, read_po  # noqa: F401 (autouse)

from ..factories import LeadFactory
from .factories import pallet_ruleset

LC_MESSAGES = Path(settings.BASE_DIR) / "scoring" / "locale" / "pt_BR" / "LC_MESSAGES"


@pytest.fixture(scope="module")
def entries():
    return _live(read_po(LC_MESSAGES / "django.po"))


def test_the_catalogue_is_complete_with_its_placeholders(entries):
    assert len(entries) > 100
    assert [entry["msgid"] for entry in entries if "fuzzy" in entry["flags"]] == []
    assert [entry["msgid"] for entry in entries if not all(entry["msgstr"].values())] == []
    placeholder = re.compile(r"%\(\w+\)[sdr]|%[sd]")
    for entry in entries:
        for index, text in entry["msgstr"].items():
            source = entry["msgid_plural"] if index and entry["msgid_plural"] else entry["msgid"]
            assert sorted(placeholder.findall(text)) == sorted(placeholder.findall(source)), entry["msgid"]


def test_the_compiled_catalogue_matches_the_po(entries):
    with (LC_MESSAGES / "django.mo").open("rb") as handle:
        compiled = {key: value for key, value in gettext.GNUTranslations(handle)._catalog.items() if key != ""}
    expected = {}
    for entry in entries:
        for index, text in entry["msgstr"].items():
            expected[_catalog_key(entry, index) if entry["msgid_plural"] else _catalog_key(entry)] = text
    assert compiled == expected, "scoring/locale/pt_BR/LC_MESSAGES/django.mo is stale: run msgfmt"


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
