from decimal import Decimal

import pytest

from leads.normalize import (
    display_phone,
    normalize_budget,
    normalize_email,
    normalize_phone,
    normalize_state,
    split_name,
)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [("  Ana@Empresa.COM.br ", "ana@empresa.com.br"), ("Joao@Pão.com.br", "joao@xn--po-sia.com.br"), ("", "")],
)
def test_email_is_trimmed_lowercased_and_idna_encoded(raw, clean):
    assert normalize_email(raw) == clean


@pytest.mark.parametrize("raw", ["ana", "ana@", "@x.com", "a b@x.com", "ana@x"])
def test_invalid_email_is_refused(raw):
    with pytest.raises(ValueError):
        normalize_email(raw)


@pytest.mark.parametrize(
    "raw", ["(11) 98765-4321", "11987654321", "+55 11 98765-4321", "+55 (11) 98765.4321"]
)
def test_brazilian_phone_numbers_become_e164(raw):
    assert normalize_phone(raw) == "+5511987654321"


def test_foreign_number_keeps_its_country():
    assert normalize_phone("+1 415 555 2671") == "+14155552671"


@pytest.mark.parametrize("raw", ["123", "abc", "+55 11 1234"])
def test_invalid_phone_is_refused(raw):
    with pytest.raises(ValueError):
        normalize_phone(raw)


@pytest.mark.parametrize(
    ("raw", "uf"),
    [("SP", "SP"), ("sp", "SP"), ("São Paulo", "SP"), ("sao paulo", "SP"), ("SAO PAULO", "SP"),
     ("Rio Grande do Sul", "RS"), ("goias", "GO"), ("", "")],
)
def test_state_from_code_or_name_ignoring_case_and_accents(raw, uf):
    assert normalize_state(raw) == uf


def test_unknown_state_is_refused():
    with pytest.raises(ValueError):
        normalize_state("Atlantis")


@pytest.mark.parametrize(
    ("raw", "amount"),
    [("R$ 5.000,00", "5000.00"), ("5000", "5000.00"), ("5k", "5000.00"), ("5,5 mil", "5500.00"),
     ("1.234.567,89", "1234567.89"), ("1,234,567.89", "1234567.89"), ("12,50", "12.50"), ("2.5", "2.50"),
     (7000, "7000.00"), ("", None), (None, None)],
)
def test_budget_in_the_ways_people_write_it(raw, amount):
    result = normalize_budget(raw)
    assert result == (Decimal(amount) if amount else None)


@pytest.mark.parametrize("raw", ["muito", "5k reais?", "-100"])
def test_nonsense_budget_is_refused(raw):
    with pytest.raises(ValueError):
        normalize_budget(raw)


def test_split_name():
    assert split_name(" Maria  da Silva ") == ("Maria", "da Silva")
    assert split_name("") == ("", "")


@pytest.mark.parametrize(
    ("stored", "shown"),
    [("+5511987654321", "(11) 98765-4321"), ("+551132165400", "(11) 3216-5400"),
     ("+16502530000", "+1 650-253-0000"), ("", ""), ("not a number", "not a number")],
)
def test_a_stored_phone_is_shown_as_people_write_it(stored, shown):
    assert display_phone(stored, "BR") == shown


def test_a_phone_of_the_default_region_is_national_and_others_international():
    assert display_phone("+16502530000", "US") == "(650) 253-0000"
    assert display_phone("+5511987654321", "US") == "+55 11 98765-4321"
