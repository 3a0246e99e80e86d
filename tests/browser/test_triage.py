"""The triage UI in a real browser (Debian's Chromium through Playwright), against the
live server: log in, filter, open, act, bulk-assign, pt-BR, keyboard, live updates.
Screenshots of the inbox and the lead page go to ``test-artifacts/``."""

import re
from pathlib import Path

import pytest
from django.conf import settings

from leads import services
from leads.models import Lead, LeadStatus
from tests.factories import LeadFactory, ReasonFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts"
PASSWORD = "secret-pass-123"  # tests.factories.UserFactory


def qualified(score=50, temperature="warm", **fields):
    lead = LeadFactory(**fields)
    lead = services.lead_change_status(lead=lead, status=LeadStatus.QUALIFIED)
    return services.lead_record_score(lead=lead, score=score, temperature=temperature)


@pytest.fixture
def page(chromium, live_server):
    context = chromium.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()


def log_in(page, user):
    page.goto("/leads/")
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/leads/"))


def screenshot(page, name):
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def test_a_rep_filters_opens_a_lead_disqualifies_it_and_sees_it_on_the_timeline(page, rep):
    reason = ReasonFactory(slug="no_budget", label="Sem orçamento agora", kind="disqualified")
    from scoring import services as scoring
    from tests.scoring.factories import pallet_ruleset

    scoring.rescore_job_run(job_id=scoring.ruleset_activate(ruleset=pallet_ruleset()).pk)
    paula = LeadFactory(first_name="Paula", last_name="Paulista", state="SP", company="Paletes Paulista",
                        phone="+5511987650001", interest="Paletes PBR", job_title="Diretora de Logística",
                        company_size=120, budget=20000)
    scoring.lead_qualify(lead=paula)
    qualified(first_name="Carla", last_name="Carioca", state="RJ", company="Caixas Rio", score=61,
              interest="caixas de madeira")
    for n in range(6):
        qualified(first_name="Outro", last_name=f"Lead {n}", state="MG", score=20 + n, temperature="cold")
    log_in(page, rep)
    assert page.locator("#total").inner_text().strip() == "8 leads"
    screenshot(page, "inbox.png")

    page.locator("details.filters > summary").click()
    page.get_by_label("State (UF)").select_option("SP")
    page.get_by_label("Search name, email, company, phone").fill("paletes paulista")
    page.get_by_role("button", name="Apply filters").click()
    page.wait_for_url(re.compile(r"state=SP"))
    rows = page.locator("#leads tbody tr[data-href]")
    assert rows.count() == 1
    assert "Paula Paulista" in rows.first.inner_text()

    page.get_by_role("link", name="Paula Paulista").click()
    page.get_by_role("heading", name=re.compile("Paula Paulista")).wait_for()
    why = page.locator("table.why").inner_text()
    assert "Decisor" in why and "Diretora de Logística" in why and "+30" in why
    page.locator("#act-disqualify summary").click()
    page.locator("#act-disqualify").get_by_label("Reason").select_option(label=reason.label)
    page.locator("#id_disqualify-note").fill("Sem verba até o próximo ano")
    page.locator("#act-disqualify").get_by_role("button", name="Save").click()
    page.get_by_text("Lead disqualified.").wait_for()
    timeline = page.locator("#timeline")
    assert "Qualified → Disqualified" in timeline.inner_text()
    assert "Sem orçamento agora" in timeline.inner_text()
    assert "Sem verba até o próximo ano" in timeline.inner_text()
    assert Lead.objects.get(first_name="Paula").status == LeadStatus.DISQUALIFIED
    screenshot(page, "lead.png")


def test_a_manager_bulk_assigns_the_selected_leads(page, manager, rep):
    first = qualified(first_name="Bia", last_name="Um", score=90, temperature="hot")
    second = qualified(first_name="Caio", last_name="Dois", score=80, temperature="hot")
    untouched = qualified(first_name="Davi", last_name="Três", score=10, temperature="cold")
    log_in(page, manager)
    page.get_by_label("Select Bia Um").check()
    page.get_by_label("Select Caio Dois").check()
    page.get_by_label("Action").select_option("assign")
    page.locator("#bulk-owner").select_option(str(rep.pk))
    page.get_by_role("button", name="Apply to selected").click()
    page.get_by_text("2 leads updated.").wait_for()
    owners = dict(Lead.objects.values_list("id", "owner_id"))
    assert (owners[first.pk], owners[second.pk], owners[untouched.pk]) == (rep.pk, rep.pk, None)
    assert page.locator("tr", has_text="Bia Um").get_by_text("Rita Rep").is_visible()


def test_the_language_switch_shows_the_pages_in_brazilian_portuguese(page, rep):
    qualified(first_name="Ana", last_name="Souza")
    log_in(page, rep)
    page.get_by_label("Language").select_option("pt-br")
    page.wait_for_load_state("load")
    page.get_by_role("heading", name="Caixa de entrada").wait_for()
    assert page.locator("details.filters > summary").inner_text() == "Filtros"
    assert page.locator("th", has_text="Pontuação").count() == 1
    # None yet: pt-BR's plural rule (CLDR: 0 and 1 are "one") says it in the singular.
    assert page.locator("#count-mine").inner_text().strip() == "0 meu lead aberto"
    page.get_by_role("link", name="Ana Souza").click()
    assert page.get_by_text("Desqualificar").first.is_visible()
    assert page.get_by_role("heading", name="Histórico").is_visible()


def test_keyboard_moves_opens_acts_and_lists_the_shortcuts(page, rep):
    qualified(first_name="Primeira", last_name="Lead", score=90, temperature="hot")
    qualified(first_name="Segunda", last_name="Lead", score=80, temperature="hot")
    qualified(first_name="Terceira", last_name="Lead", score=70, temperature="hot")
    log_in(page, rep)
    page.keyboard.press("j")
    page.keyboard.press("j")
    current = page.locator("#leads tr.current")
    assert "Segunda Lead" in current.inner_text()
    page.keyboard.press("k")
    assert "Primeira Lead" in page.locator("#leads tr.current").inner_text()
    page.keyboard.press("j")
    page.keyboard.press("Enter")
    page.get_by_role("heading", name=re.compile("Segunda Lead")).wait_for()

    page.keyboard.press("?")
    assert page.locator("#shortcuts").is_visible()
    page.keyboard.press("Escape")
    page.keyboard.press("n")
    assert page.evaluate("document.activeElement.id") == "id_note-text"
    page.keyboard.type("Ligar amanhã")
    page.locator("#act-note").get_by_role("button", name="Save").click()
    page.get_by_text("Note added.").wait_for()
    page.keyboard.press("c")
    page.get_by_text("You claimed this lead.").wait_for()
    assert Lead.objects.get(first_name="Segunda").owner == rep
    page.keyboard.press("u")
    page.get_by_role("heading", name="Inbox").wait_for()


def test_new_hot_leads_appear_without_a_reload(page, rep, settings):
    settings.FUNIL_INBOX_POLL_SECONDS = 1
    qualified(first_name="Antiga", last_name="Lead")
    log_in(page, rep)
    page.evaluate("window.__marker = 'same page'")
    qualified(first_name="Recém", last_name="Chegada", score=97, temperature="hot")
    page.locator("#fresh").get_by_text("Recém Chegada").wait_for()
    assert page.locator("#fresh").get_by_text("1 new hot lead").is_visible()
    assert page.evaluate("window.__marker") == "same page"


def test_the_inbox_reads_on_a_phone(page, rep):
    qualified(first_name="Mobile", last_name="Lead", company="Paletes Ltda")
    page.set_viewport_size({"width": 390, "height": 844})
    log_in(page, rep)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390 + 1
    screenshot(page, "inbox-phone.png")


# Words of the score's explanation that the browser cut across two lines.
SPLIT_WORDS = """() => {
  const split = [];
  const walker = document.createTreeWalker(document.querySelector("table.why"), NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    for (const match of node.textContent.matchAll(/\\S+/g)) {
      const range = document.createRange();
      range.setStart(node, match.index);
      range.setEnd(node, match.index + match[0].length);
      const lines = new Set([...range.getClientRects()].map((rect) => Math.round(rect.top)));
      if (lines.size > 1) split.push(match[0]);
    }
  }
  return split;
}"""


@pytest.mark.parametrize("width", [390, 1280])
def test_the_scores_explanation_reads_without_cut_words_on_a_phone_and_in_the_side_column(page, rep, width):
    from scoring import services as scoring
    from tests.scoring.factories import pallet_ruleset

    scoring.ruleset_activate(ruleset=pallet_ruleset())
    lead = LeadFactory(first_name="Rafael", last_name="Barbosa", state="MG", budget=150000, company_size=80,
                       email="rafael@yahoo.com.br", phone="+5511969821041")
    scoring.lead_qualify(lead=lead)
    page.set_viewport_size({"width": width, "height": 900})
    log_in(page, rep)
    page.goto(f"/leads/{lead.pk}/")
    assert page.get_by_role("link", name="(11) 96982-1041").get_attribute("href") == "tel:+5511969821041"
    table = page.locator("table.why")
    table.wait_for()
    assert page.evaluate("document.documentElement.scrollWidth") <= width + 1
    assert page.evaluate(SPLIT_WORDS) == []
    # Each rule is a block: its name, then each cell after its column's name.
    looked_at = page.evaluate("""() => getComputedStyle(document.querySelector("table.why td[data-label]"),
                                                         "::before").content""")
    assert "Looked at" in looked_at
    screenshot(page, f"lead-explanation-{width}.png")
