"""The four pt-BR catalogues (config, leads, scoring, nurturing) are complete and compiled,
and the UI follows the chosen language."""

import ast
import gettext
import re
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse
from django.utils import translation

from leads import services
from leads.models import LeadStatus, Temperature
from tests.factories import LeadFactory

# Every pt-BR catalogue: config/locale (LOCALE_PATHS) and each app's own (see config/messages.py).
CATALOGUES = ("config", "leads", "scoring", "nurturing")


def lc_messages(catalogue):
    return Path(settings.BASE_DIR) / catalogue / "locale" / "pt_BR" / "LC_MESSAGES"


# --- A small .po reader (no third-party dependency) -----------------------------------


def _unquote(text):
    """A PO string literal ("...", C escapes) -> its value."""
    text = text.strip()
    assert text.startswith('"') and text.endswith('"'), f"not a PO string: {text!r}"
    return ast.literal_eval(text)


def read_po(path):
    """The entries of a .po file: dicts with msgctxt, msgid, msgid_plural, msgstr
    (a dict index -> text; index 0 for singular entries), flags and obsolete."""
    entries = []
    entry = None
    field = None

    def finish():
        nonlocal entry, field
        if entry is not None and "msgid" in entry:
            entries.append(entry)
        entry, field = None, None

    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line:
            finish()
            continue
        if entry is None:
            entry = {"msgctxt": None, "msgid_plural": None, "msgstr": {}, "flags": set(), "obsolete": False}
        if line.startswith("#~"):
            entry["obsolete"] = True
            line = line[2:].strip()
            if not line or line.startswith("#"):
                continue
        elif line.startswith("#,"):
            entry["flags"].update(flag.strip() for flag in line[2:].split(",") if flag.strip())
            continue
        elif line.startswith("#"):
            continue
        if line.startswith('"'):
            value = _unquote(line)
            if isinstance(field, tuple):
                entry["msgstr"][field[1]] += value
            else:
                entry[field] += value
            continue
        keyword, _, rest = line.partition(" ")
        if keyword.startswith("msgstr["):
            field = ("msgstr", int(keyword[len("msgstr["):-1]))
            entry["msgstr"][field[1]] = _unquote(rest)
        elif keyword == "msgstr":
            field = ("msgstr", 0)
            entry["msgstr"][0] = _unquote(rest)
        elif keyword in ("msgctxt", "msgid", "msgid_plural"):
            field = keyword
            entry[keyword] = _unquote(rest)
        else:
            raise AssertionError(f"unexpected line in {path.name}: {raw!r}")
    finish()
    return entries


def _live(entries):
    """Translatable entries: not the header, not obsolete."""
    return [entry for entry in entries if entry["msgid"] and not entry["obsolete"]]


def _catalog_key(entry, index=None):
    """The key ``gettext.GNUTranslations`` stores an entry under."""
    msgid = entry["msgid"] if entry["msgctxt"] is None else f"{entry['msgctxt']}\x04{entry['msgid']}"
    return msgid if index is None else (msgid, index)


@pytest.fixture(scope="module", params=CATALOGUES)
def catalogue(request):
    """The name of one pt-BR catalogue: each catalogue test runs once per catalogue."""
    return request.param


@pytest.fixture(scope="module")
def po_entries(catalogue):
    po_path = lc_messages(catalogue) / "django.po"
    assert po_path.exists(), f"{po_path} is missing: run make messages"
    return read_po(po_path)


@pytest.fixture(autouse=True)
def _restore_language():
    """LocaleMiddleware activates the request's language in this thread; put it back."""
    previous = translation.get_language()
    yield
    if previous is None:
        translation.deactivate_all()
    else:
        translation.activate(previous)


# --- (a) complete catalogues -------------------------------------------------------------


def test_po_header_declares_brazilian_portuguese(po_entries):
    header = next(entry for entry in po_entries if entry["msgid"] == "")
    assert "fuzzy" not in header["flags"]
    text = header["msgstr"][0]
    assert "Language: pt_BR\n" in text
    assert "charset=UTF-8" in text
    assert "Plural-Forms: nplurals=2; plural=(n > 1);" in text


def test_every_msgid_is_translated_and_none_is_fuzzy(po_entries):
    entries = _live(po_entries)
    assert len(entries) > 100, "the catalogue looks truncated"
    fuzzy = [entry["msgid"] for entry in entries if "fuzzy" in entry["flags"]]
    assert fuzzy == []
    empty = [entry["msgid"] for entry in entries if not entry["msgstr"] or not all(entry["msgstr"].values())]
    assert empty == []
    plural_forms_missing = [
        entry["msgid"] for entry in entries if entry["msgid_plural"] and sorted(entry["msgstr"]) != [0, 1]
    ]
    assert plural_forms_missing == []


def test_placeholders_are_kept_in_translations(po_entries):
    """msgstr[0] keeps the msgid's placeholders, the plural forms the msgid_plural's."""
    placeholder = re.compile(r"%\(\w+\)[sdr]|%[sd]|\{\w*\}")
    for entry in _live(po_entries):
        for index, msgstr in entry["msgstr"].items():
            source = entry["msgid_plural"] if index and entry["msgid_plural"] else entry["msgid"]
            wanted = sorted(placeholder.findall(source))
            assert sorted(placeholder.findall(msgstr)) == wanted, (entry["msgid"], msgstr)


# --- (b) the .mo matches the .po ------------------------------------------------------------


def test_compiled_mo_is_up_to_date_with_the_po(catalogue, po_entries):
    mo_path = lc_messages(catalogue) / "django.mo"
    assert mo_path.exists(), f"{mo_path} is missing: run make messages"
    with mo_path.open("rb") as handle:
        compiled = gettext.GNUTranslations(handle)
    mo_catalog = {key: value for key, value in compiled._catalog.items() if key != ""}

    po_catalog = {}
    for entry in _live(po_entries):
        if entry["msgid_plural"]:
            for index, text in entry["msgstr"].items():
                po_catalog[_catalog_key(entry, index)] = text
        else:
            po_catalog[_catalog_key(entry)] = entry["msgstr"][0]

    assert set(mo_catalog) == set(po_catalog), f"{mo_path} is stale: run make messages"
    changed = sorted(str(key) for key in po_catalog if mo_catalog[key] != po_catalog[key])
    assert changed == [], f"{mo_path} is stale: run make messages"


# --- (c) Accept-Language -----------------------------------------------------------------------


@pytest.fixture
def qualified_lead(rep):
    lead = LeadFactory(first_name="Bruna", last_name="Lima")
    lead = services.lead_change_status(lead=lead, status=LeadStatus.QUALIFIED)
    return services.lead_assign(lead=lead, owner=rep, actor=rep)


def test_inbox_in_portuguese_for_a_pt_br_browser(client, rep, qualified_lead):
    client.force_login(rep)
    response = client.get(reverse("leads:inbox"), HTTP_ACCEPT_LANGUAGE="pt-BR")
    assert response.status_code == 200
    html = response.content.decode()
    assert '<html lang="pt-br">' in html
    assert "Bruna Lima" in html
    for text in ("Caixa de entrada", "Sair", "Responsável", "Pontuação", "Empresa", "Qualificado", "Frio"):
        assert text in html, text
    for text in (">Inbox<", ">Log out<", ">Owner<", ">Score<", ">Qualified<"):
        assert text not in html, text


def test_inbox_in_english_for_an_english_browser(client, rep, qualified_lead):
    client.force_login(rep)
    response = client.get(reverse("leads:inbox"), HTTP_ACCEPT_LANGUAGE="en")
    assert response.status_code == 200
    html = response.content.decode()
    assert '<html lang="en">' in html
    assert "Bruna Lima" in html
    for text in ("Inbox", "Log out", "Owner", "Score", "Qualified", "Cold"):
        assert text in html, text
    for text in ("Caixa de entrada", "Sair", "Responsável", "Pontuação", "Qualificado"):
        assert text not in html, text


def test_lead_detail_in_portuguese(client, rep, qualified_lead):
    client.force_login(rep)
    response = client.get(qualified_lead.get_absolute_url(), HTTP_ACCEPT_LANGUAGE="pt-BR")
    assert response.status_code == 200
    html = response.content.decode()
    for text in ("Histórico", "Origem", "Capturado", "Status alterado", "Atribuído", "por Sistema", "por Rita Rep"):
        assert text in html, text


# --- (d) set_language ---------------------------------------------------------------------------


def test_set_language_view_switches_the_page(client, rep):
    client.force_login(rep)
    inbox = reverse("leads:inbox")
    assert "Inbox" in client.get(inbox).content.decode()

    response = client.post(reverse("set_language"), {"language": "pt-br", "next": inbox}, follow=True)
    assert response.redirect_chain[-1][0] == inbox
    assert "Caixa de entrada" in response.content.decode()
    # The choice sticks for later requests, whatever the browser says.
    html = client.get(inbox, HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "Caixa de entrada" in html
    assert "Sair" in html

    response = client.post(reverse("set_language"), {"language": "en", "next": inbox}, follow=True)
    html = response.content.decode()
    assert "Inbox" in html
    assert "Caixa de entrada" not in html


# --- (e) login page ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_login_page_in_portuguese(client):
    response = client.get(reverse("login"), HTTP_ACCEPT_LANGUAGE="pt-BR")
    assert response.status_code == 200
    html = response.content.decode()
    for text in ("Entrar no Funil", "Usuário", "Senha", "Entrar", "Idioma"):
        assert text in html, text
    assert "Log in to Funil" not in html
    assert "Password" not in html


def test_failed_login_error_in_portuguese(client, rep):
    response = client.post(
        reverse("login"), {"username": "rep", "password": "wrong"}, HTTP_ACCEPT_LANGUAGE="pt-BR"
    )
    assert response.status_code == 200
    assert "Usuário ou senha incorretos. Tente novamente." in response.content.decode()


# --- (f) model choice labels -------------------------------------------------------------------


def test_status_and_temperature_labels_translate():
    with translation.override("pt-br"):
        assert str(LeadStatus.OUT_OF_FOCUS.label) == "Fora de foco"
        assert str(LeadStatus.DISQUALIFIED.label) == "Desqualificado"
        assert str(LeadStatus.QUALIFIED.label) == "Qualificado"
        assert str(LeadStatus.NEW.label) == "Novo"
        assert str(LeadStatus.CONVERTED.label) == "Convertido"
        assert [str(label) for _, label in Temperature.choices] == ["Quente", "Morno", "Frio"]
    with translation.override("en"):
        assert str(LeadStatus.OUT_OF_FOCUS.label) == "Out of focus"
        assert [str(label) for _, label in Temperature.choices] == ["Hot", "Warm", "Cold"]


@pytest.mark.django_db
def test_unassigned_leads_show_as_unassigned_on_the_inbox_and_lead_page(client, manager):
    from leads import services
    from leads.models import LeadStatus

    from ..factories import LeadFactory

    lead = services.lead_change_status(lead=LeadFactory(), status=LeadStatus.QUALIFIED)
    client.force_login(manager)
    for url in ("/leads/", f"/leads/{lead.pk}/"):
        response = client.get(url, HTTP_ACCEPT_LANGUAGE="pt-BR")
        assert response.status_code == 200
        assert "Sem responsável" in response.content.decode()
