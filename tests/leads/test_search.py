"""The search (name, email, company, phone; accents and case ignored) finds a lead as
it is now, however it was written: by a service, a bulk import or an erasure."""

import pytest
from django.db import connection

from leads import privacy, selectors, services
from leads.models import Lead

from ..factories import LeadFactory

pytestmark = pytest.mark.django_db


def found(text):
    return sorted(selectors.lead_search(Lead.objects.all(), text).values_list("email", flat=True))


@pytest.fixture
def people(db):
    return [
        LeadFactory(email="joao@paletes.com.br", first_name="João", last_name="Conceição", company="Paletes São João",
                    phone="+5511987654321"),
        LeadFactory(email="maria@caixas.com.br", first_name="Maria", last_name="Souza", company="Caixas 100%",
                    phone="+5521912345678"),
    ]


def test_every_word_in_any_field_case_ignored(people):
    assert found("PALETES") == ["joao@paletes.com.br"]
    assert found("souza CAIXAS") == ["maria@caixas.com.br"]
    assert found("joao caixas") == []
    assert found("(11) 98765-4321") == ["joao@paletes.com.br"]
    assert found("caixas.com") == ["maria@caixas.com.br"]


def test_like_wildcards_typed_by_a_person_are_plain_characters(people):
    assert found("100%") == ["maria@caixas.com.br"]
    assert found("%") == ["maria@caixas.com.br"]
    assert found("_") == []


def test_on_postgresql_accents_are_ignored_too(people, require_postgres):
    assert found("joao conceicao") == ["joao@paletes.com.br"]
    assert found("SAO JOÃO") == found("CONCEIÇÃO") == ["joao@paletes.com.br"]


def test_a_lead_is_found_by_its_new_name_once_changed_and_not_by_its_old_one(people, manager):
    services.lead_update_contact(lead=people[1], actor=manager, fields={"company": "Embalagens Açaí"})
    assert found("açaí") == ["maria@caixas.com.br"]
    assert found("caixas 100") == []


def test_an_erased_lead_is_no_longer_found_by_what_it_was(people, manager):
    privacy.lead_erase(lead=people[0], actor=manager)
    assert found("conceição") == [] and found("98765") == [] and found("joao@paletes") == []


def test_on_postgresql_the_search_table_follows_inserts_of_many_rows_and_not_score_updates(people, require_postgres):
    # One INSERT of several rows, as bulk writers do.
    Lead.objects.bulk_create([Lead(email=f"bulk{n}@x.com.br", first_name="Zé", last_name=f"Bulk {n}")
                              for n in (1, 2, 3)])
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM leads_leadsearch")
        assert cursor.fetchone()[0] == 5
        cursor.execute("SELECT lead_id, ctid FROM leads_leadsearch ORDER BY lead_id")
        before = cursor.fetchall()
        cursor.execute("UPDATE leads_lead SET score = score + 5, status = 'qualified'")  # a rescoring's kind of write
        cursor.execute("SELECT lead_id, ctid FROM leads_leadsearch ORDER BY lead_id")
        assert cursor.fetchall() == before  # not one search row rewritten
    assert found("ze bulk") == ["bulk1@x.com.br", "bulk2@x.com.br", "bulk3@x.com.br"]
