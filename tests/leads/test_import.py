"""CSV import: ``manage.py import_leads`` and ``leads.importer``.

Each test writes a real file, imports it into the test database (PostgreSQL takes the
COPY path, SQLite the ORM path) and checks the leads, the timeline, the report and the
rejected-rows file.
"""

import csv
import datetime
import io
import logging
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from leads import importer, services
from leads.management.commands.import_leads import ProgressBar
from leads.models import Consent, Lead, LeadEvent

from ..factories import FormFactory, LeadFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def form(db):
    return FormFactory(
        fields=["email", "name", "phone", "company", "job_title", "state", "city", "interest", "budget", "segmento",
                "consent"],
        consent_text="Aceito receber contatos.", consent_version="v3",
    )


def write(tmp_path, text, *, name="leads.csv", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def run(path, *args, form_slug="contato"):
    out, err = io.StringIO(), io.StringIO()
    call_command("import_leads", str(path), "--form", form_slug, *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def rejected_rows(path):
    with importer.rejected_path_for(path).open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.reader(handle, delimiter=importer.CsvFile(path).delimiter))


SEMICOLON_PT = (
    "Nome;E-mail;Celular;Empresa;Estado;Orçamento;Segmento\r\n"
    "Conceição Araújo;Conceicao@Empresa.com.BR;(11) 98765-4321;Paletes São João;São Paulo;R$ 5.000,00;indústria\r\n"
    "João Simões;joao@logistica.com.br;;Logística Falcão;rj;5k;\r\n"
)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "cp1252"])
def test_a_semicolon_file_in_utf8_or_cp1252_is_read_with_its_accents(tmp_path, form, encoding):
    path = write(tmp_path, SEMICOLON_PT, encoding=encoding)
    out, _err = run(path, "--map", "Celular=phone")
    assert "created:  2 new leads" in out
    conceicao = Lead.objects.get(email="conceicao@empresa.com.br")
    assert (conceicao.first_name, conceicao.last_name, conceicao.company) == ("Conceição", "Araújo", "Paletes São João")
    assert (conceicao.phone, conceicao.state, conceicao.budget) == ("+5511987654321", "SP", Decimal("5000.00"))
    assert conceicao.attributes == {"segmento": "indústria"}
    assert (conceicao.source, conceicao.form) == (form.source, form)
    joao = Lead.objects.get(email="joao@logistica.com.br")
    assert (joao.first_name, joao.state, joao.budget, joao.phone) == ("João", "RJ", Decimal("5000.00"), "")


def test_a_comma_file_with_quoted_cells_and_english_headers_maps_by_itself(tmp_path, form):
    path = write(tmp_path, (
        "Email,First name,Last name,Company,State (UF),Message\n"
        'ana@x.com.br,Ana,Lima,"Lima, Filhos & Cia",SP,"Quero 200 paletes;\nentrega em Jundiaí"\n'
    ))
    form.fields = [*form.fields, "first_name", "last_name", "message"]
    form.save()
    csv_file = importer.CsvFile(path)
    assert (csv_file.encoding, csv_file.delimiter) == ("utf-8-sig", ",")
    assert importer.auto_columns(csv_file.header, form) == [
        "email", "first_name", "last_name", "company", "state", "message"]
    run(path)
    lead = Lead.objects.get()
    assert (lead.first_name, lead.last_name, lead.company) == ("Ana", "Lima", "Lima, Filhos & Cia")
    assert lead.message == "Quero 200 paletes;\nentrega em Jundiaí"


def test_map_sends_a_column_to_a_field_or_ignores_it(tmp_path, form):
    path = write(tmp_path, "Contato;Correio;Empresa\nBia Reis;bia@x.com.br;Reis SA\n")
    run(path, "--map", "Correio=email", "--map", "Contato=name", "--map", "Empresa=")
    lead = Lead.objects.get()
    assert (lead.email, lead.first_name, lead.last_name, lead.company) == ("bia@x.com.br", "Bia", "Reis", "")


@pytest.mark.parametrize(("args", "message"), [
    (["--map", "Inexistente=email"], "The file has no column 'Inexistente'"),
    (["--map", "Empresa=salario"], "'salario' is not a field the form accepts"),
    (["--map", "Empresa=email", "--map", "E-mail=email"], "'Empresa' and 'E-mail' both go to 'email'"),
    (["--map", "E-mail="], "Map a column to email or phone"),
    (["--map", "E-mail"], "write it as COLUMN=FIELD"),
])
def test_a_mapping_that_does_not_fit_the_file_is_refused_before_anything_is_written(tmp_path, form, args, message):
    path = write(tmp_path, "E-mail;Empresa\nx@y.com.br;Y\n")
    with pytest.raises(CommandError, match=message):
        run(path, *args)
    assert not Lead.objects.exists()


def test_unknown_form_or_missing_file_is_a_clear_error(tmp_path, form):
    with pytest.raises(CommandError, match="No form with the slug 'nada'"):
        run(write(tmp_path, "email\nx@y.com.br\n"), form_slug="nada")
    with pytest.raises(CommandError, match="Cannot read"):
        run(tmp_path / "missing.csv")
    with pytest.raises(CommandError, match="no header line"):
        run(write(tmp_path, "\n\n", name="empty.csv"))


def test_placeholder_values_are_read_as_empty_only_when_asked(tmp_path, form):
    text = "E-mail;Estado;Empresa;Cargo\nana@x.com.br;Selecione;-;SELECIONE\n"
    path = write(tmp_path, text)
    out, _err = run(path)
    assert "rejected: 1" in out  # "Selecione" is no state
    assert not Lead.objects.exists()
    out, _err = run(path, "--empty", "selecione", "--empty", "-")
    lead = Lead.objects.get()
    assert (lead.state, lead.company, lead.job_title) == ("", "", "")


def test_rejected_rows_are_reported_with_their_line_and_written_beside_the_file(tmp_path, form):
    path = write(tmp_path, (
        "Nome;E-mail;Estado;Orçamento\n"
        "Ana;ana@x.com.br;SP;5000\n"
        'Bruno;bruno@;SP;"linha\nquebrada"\n'  # lines 3-4: a quoted cell spans two lines
        "Carla;carla@x.com.br;Atlântida;muito\n"  # line 5
        ";;;\n"  # line 6: blank, skipped
        "Davi;;;\n"  # line 7: neither email nor phone
    ))
    out, _err = run(path)
    assert "rows:     5 (1 blank, skipped)" in out
    assert "created:  1 new leads" in out
    assert "rejected: 3" in out
    assert "line 3: email: Enter a valid email address.; budget: Enter an amount" in out
    assert "line 5: state: Enter a Brazilian state (UF code or name).; budget:" in out
    assert "line 7: email: Enter an email address or a phone number." in out
    assert f"rejected rows written to {importer.rejected_path_for(path)}" in out
    rows = rejected_rows(path)
    assert rows[0] == ["Nome", "E-mail", "Estado", "Orçamento", "line", "errors"]
    assert [row[:2] + row[-2:-1] for row in rows[1:]] == [["Bruno", "bruno@", "3"], ["Carla", "carla@x.com.br", "5"],
                                                         ["Davi", "", "7"]]
    assert rows[1][3] == "linha\nquebrada"  # the row exactly as it was, to fix and import again
    assert rows[2][-1].startswith("state: Enter a Brazilian state")


def test_a_clean_file_leaves_no_rejected_file_and_a_rerun_removes_a_stale_one(tmp_path, form):
    path = write(tmp_path, "E-mail\nnao-e-email\n")
    run(path)
    assert importer.rejected_path_for(path).exists()
    path.write_text("E-mail\nbom@x.com.br\n", encoding="utf-8")
    out, _err = run(path)
    assert not importer.rejected_path_for(path).exists()
    assert "rejected rows written" not in out


def test_rows_are_deduplicated_against_existing_leads_filling_only_empty_fields(tmp_path, form, rep):
    existing = LeadFactory(email="ana@x.com.br", first_name="Ana", last_name="Lima", company="Certa", state="")
    services.lead_update_contact(lead=existing, actor=rep, fields={"job_title": "Diretora"})
    path = write(tmp_path, "E-mail;Nome;Empresa;Cargo;Estado\nANA@X.com.br;Outra Pessoa;Errada;Estagiária;MG\n")
    out, _err = run(path)
    assert "created:  0 new leads" in out
    assert "updated:  1 rows merged into existing leads" in out
    lead = Lead.objects.get()
    assert (lead.first_name, lead.company, lead.job_title, lead.state) == ("Ana", "Certa", "Diretora", "MG")
    event = lead.events.get(kind=LeadEvent.Kind.RESUBMITTED)
    assert event.data["filled"] == ["state"]
    assert (event.data["import"], event.data["line"], event.data["form"]) == ("leads.csv", 2, "contato")


def test_rows_are_deduplicated_within_the_file_by_email_and_by_phone_without_email(tmp_path, form):
    path = write(tmp_path, (
        "E-mail;Nome;Telefone;Empresa;Cidade\n"
        "ana@x.com.br;Ana;;Primeira;\n"
        " Ana@X.com.br ;Ana Outra;;Segunda;Campinas\n"
        ";João;(11) 98765-4321;;\n"
        ";;+55 11 98765-4321;Pallets SA;\n"
    ))
    out, _err = run(path, "--map", "Telefone=phone")
    assert "created:  2 new leads" in out
    assert "updated:  2 rows merged" in out
    ana = Lead.objects.get(email="ana@x.com.br")
    assert (ana.company, ana.city) == ("Primeira", "Campinas")
    joao = Lead.objects.get(email=None)
    assert (joao.first_name, joao.phone, joao.company) == ("João", "+5511987654321", "Pallets SA")
    assert [e.kind for e in ana.events.order_by("id")] == [LeadEvent.Kind.CAPTURED, LeadEvent.Kind.RESUBMITTED]


@pytest.mark.parametrize("batch_size", ["1", "2", "1000"])
def test_batches_of_any_size_give_the_same_leads(tmp_path, form, batch_size):
    path = write(tmp_path, "E-mail;Empresa\n" + "".join(
        f"p{i % 3}@x.com.br;{'E' + str(i) if i >= 3 else ''}\n" for i in range(7)))
    out, _err = run(path, "--batch-size", batch_size)
    assert "created:  3 new leads" in out and "updated:  4 rows merged" in out
    assert dict(Lead.objects.values_list("email", "company")) == {
        "p0@x.com.br": "E3", "p1@x.com.br": "E4", "p2@x.com.br": "E5"}


def test_a_dry_run_reports_what_would_happen_and_writes_nothing(tmp_path, form):
    LeadFactory(email="velha@x.com.br")
    path = write(tmp_path, "E-mail;Nome\nvelha@x.com.br;V\nnova@x.com.br;N\nNOVA@x.com.br;N2\nruim@;R\n")
    before = (Lead.objects.count(), LeadEvent.objects.count())
    out, _err = run(path, "--dry-run", "--batch-size", "2")
    assert "Dry run of leads.csv: nothing was written." in out
    assert "created:  1 would be new leads" in out
    assert "updated:  2 rows would be merged into existing leads" in out
    assert "rejected: 1" in out and "line 5: email:" in out
    assert (Lead.objects.count(), LeadEvent.objects.count()) == before
    assert not importer.rejected_path_for(path).exists()


def test_consent_in_the_file_is_recorded_with_the_forms_text_and_version(tmp_path, form):
    path = write(tmp_path, "E-mail;Aceite\nsim@x.com.br;sim\nnao@x.com.br;não\n")
    run(path, "--map", "Aceite=consent")
    consent = Consent.objects.get()
    assert (consent.lead.email, consent.text, consent.version, consent.form) == (
        "sim@x.com.br", "Aceito receber contatos.", "v3", form)
    assert consent.note == "import leads.csv, line 2"


def test_the_active_rules_qualify_imported_leads_as_they_qualify_captured_ones(tmp_path, form):
    from scoring.models import Ruleset

    from ..scoring.factories import pallet_ruleset

    pallet_ruleset(state=Ruleset.State.ACTIVE)
    form.fields = [*form.fields, "company_size"]
    form.save()
    path = write(tmp_path, (
        "E-mail;Cargo;Funcionários;Estado;Interesse;Orçamento\n"
        "dir@x.com.br;Diretora de Operações;51-200;SP;paletes PBR;R$ 12.000,00\n"
        "longe@x.com.br;Diretor;100;Bahia;paletes PBR;20000\n"
    ))
    run(path, "--map", "Funcionários=company_size")
    qualified = Lead.objects.get(email="dir@x.com.br")
    assert (qualified.status, qualified.status_set_by, qualified.score) == ("qualified", "rules", 50)
    assert qualified.events.get(kind=LeadEvent.Kind.STATUS_CHANGED).to_status == "qualified"
    far = Lead.objects.get(email="longe@x.com.br")
    assert (far.status, far.reason.slug) == ("out_of_focus", "outside_service_area")


def test_forked_cleaning_workers_give_the_same_result_as_cleaning_in_process(tmp_path, form):
    text = "E-mail;Nome;Estado\n" + "".join(f"w{i}@x.com.br;Pessoa {i};{'SP' if i % 5 else 'Nárnia'}\n"
                                            for i in range(60))
    results = []
    for workers in (0, 2):
        Lead.objects.all().delete()
        path = write(tmp_path, text, name=f"w{workers}.csv")
        report = importer.import_csv(path=path, form=form, empty_values=(), batch_size=7, workers=workers)
        results.append((report.rows, report.created, report.rejected, report.rejected_sample,
                        sorted(Lead.objects.values_list("email", "state"))))
    assert results[0] == results[1]
    assert results[0][:3] == (60, 48, 12)


def test_progress_goes_to_stderr_and_the_report_to_stdout(tmp_path, form):
    path = write(tmp_path, "E-mail\n" + "".join(f"p{i}@x.com.br\n" for i in range(30)))
    out, err = run(path, "--batch-size", "10")
    assert "'E-mail' → email" in out
    assert "100% 30 rows" in err and "rows/s · elapsed" in err
    assert "Imported leads.csv." in out and "time:" in out


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_the_progress_bar_redraws_one_line_on_a_terminal():
    terminal = FakeTerminal()
    bar = ProgressBar(terminal, 1000, interval=0)
    bar.update(50, 250)
    bar.update(200, 1000, final=True)
    screen = terminal.getvalue()
    assert screen.startswith("\r[########......................]  25% 50/~200 rows")
    assert "\r[##############################] 100% 200 rows" in screen
    assert screen.endswith("\n") and screen.count("\n") == 1


def test_the_file_is_streamed_not_read_whole(tmp_path, form, monkeypatch):
    """The reader pulls rows as the batches need them: after the first batch of a large
    file only a small part of it has been read."""
    path = write(tmp_path, "E-mail\n" + "".join(f"s{i:06d}@x.com.br\n" for i in range(30000)))
    seen = []
    importer.import_csv(path=path, form=form, batch_size=500, workers=0,
                        on_batch=lambda batch, report, chunk: seen.append(chunk.bytes_done))
    size = path.stat().st_size
    assert seen[0] < size / 10
    assert seen == sorted(seen) and len(seen) == 60


def test_the_cleaning_arguments_are_those_of_the_public_endpoint(form):
    """The import cleans rows with exactly what ``services.clean_for_form`` passes."""
    import inspect

    cleaner = importer._Cleaner(form, ("-",), workers=0)
    source = inspect.getsource(services.clean_for_form)
    for name in cleaner.clean_kwargs:
        assert f"{name}=" in source
    payload = {"email": " X@Y.com.br ", "state": "minas gerais", "budget": "-", "segmento": "agro"}
    clean = services.clean_for_form(form, payload, empty_values=("-",))
    from leads.capture import clean_lead_data

    assert clean == clean_lead_data(payload, **cleaner.clean_kwargs)


def test_an_import_sends_the_webhooks_the_endpoint_would_send(tmp_path, form):
    """lead.created for each new lead, and the status the rules gave it; a person who
    was already a lead is not created again, but the status the rules move it to is
    sent. Written with the batch, one delivery per subscribed active endpoint, each
    payload the lead as stored."""
    import json

    from leads import webhooks
    from leads.models import WebhookDelivery, WebhookEndpoint
    from scoring import services as scoring_services

    from ..factories import UserFactory
    from ..scoring.factories import pallet_ruleset

    scoring_services.rescore_job_run(job_id=scoring_services.ruleset_activate(ruleset=pallet_ruleset()).pk)
    LeadFactory(email="ja@cliente.com.br", first_name="Já")
    owner = UserFactory(username="mkt", email="mkt@example.com")
    WebhookEndpoint.objects.create(name="CRM", url="https://crm.example.com/hook", secret="s" * 32, owner=owner,
                                   events=["lead.created", "lead.disqualified", "lead.out_of_focus"])
    WebhookEndpoint.objects.create(name="Paused", url="https://other.example.com/hook", secret="s" * 32,
                                   owner=owner, events=["lead.created"], active=False)
    webhooks.forget_endpoints()
    path = write(tmp_path, "email;nome;estado;interesse;cargo;orçamento\n"
                           "ana@cliente.com.br;Ana;SP;paletes;Diretora de compras;20000\n"
                           "rio@cliente.com.br;Rio;RJ;paletes;Gerente;20000\n"
                           "ja@cliente.com.br;Já;SP;;;\n")
    run(path, "--map", "estado=state", "--map", "interesse=interest", "--map", "cargo=job_title",
        "--map", "orçamento=budget", form_slug=form.slug)
    sent = sorted((d.event, json.loads(d.body)["lead"]["email"]) for d in WebhookDelivery.objects.all())
    ana, rio = Lead.objects.get(email="ana@cliente.com.br"), Lead.objects.get(email="rio@cliente.com.br")
    assert (ana.status, rio.status) == ("disqualified", "out_of_focus")  # 30 points of 40; outside SP
    assert Lead.objects.get(email="ja@cliente.com.br").status == "disqualified"  # new until this resubmission
    assert sent == [("lead.created", "ana@cliente.com.br"), ("lead.created", "rio@cliente.com.br"),
                    ("lead.disqualified", "ana@cliente.com.br"), ("lead.disqualified", "ja@cliente.com.br"),
                    ("lead.out_of_focus", "rio@cliente.com.br")]
    assert {d.endpoint.name for d in WebhookDelivery.objects.all()} == {"CRM"}


# --- Brazilian headers, and what the mapping leaves out -----------------------------------------


@pytest.mark.parametrize(("header", "field"), [
    ("UF", "state"), ("uf", "state"), ("Estado", "state"), ("Estado/UF", "state"),
    ("Cidade", "city"), ("Município", "city"), ("MUNICIPIO", "city"),
    ("Empresa", "company"), ("Razão social", "company"), ("RAZAO SOCIAL", "company"), ("Nome fantasia", "company"),
    ("Cargo", "job_title"), ("Função", "job_title"),
    ("Celular", "phone"), ("Telefone", "phone"), ("WhatsApp", "phone"), ("Fone", "phone"),
    ("Telefone/WhatsApp", "phone"),
    ("E-mail", "email"), ("e-mail", "email"), ("Email", "email"), ("Endereço de e-mail", "email"),
    ("Nome", "name"), ("Nome completo", "name"), ("Sobrenome", "last_name"), ("Primeiro nome", "first_name"),
    ("Interesse", "interest"), ("Produto de interesse", "interest"),
    ("Orçamento", "budget"), ("orcamento", "budget"), ("Verba", "budget"),
    ("Mensagem", "message"), ("Observações", "message"),
    ("Funcionários", "company_size"), ("Nº de funcionários", "company_size"),
    ("País", "country"), ("Consentimento", "consent"), ("Aceite LGPD", "consent"), ("Campanha", "utm_campaign"),
])
def test_what_brazilian_spreadsheets_call_a_field_maps_to_it_by_itself(db, header, field):
    form = FormFactory(slug="todos", fields=list(importer.Form.STANDARD_FIELDS))
    assert importer.auto_columns([header], form) == [field]


def test_ambiguous_headers_and_fields_the_form_does_not_take_stay_unmapped(db):
    form = FormFactory(slug="curto", fields=["email", "name", "phone"])
    header = ["Contato", "Porte", "Região", "Cargo", "UF", "Celular"]
    assert importer.auto_columns(header, form) == [None, None, None, None, None, "phone"]


def test_a_forms_own_field_wins_over_a_synonym_and_a_field_goes_to_its_first_column(db):
    form = FormFactory(slug="zap", fields=["email", "name", "phone", "whatsapp"])
    assert importer.auto_columns(["WhatsApp", "Celular", "Telefone"], form) == ["whatsapp", "phone", None]


def test_nome_beside_sobrenome_is_the_first_name_so_a_double_first_name_is_kept(tmp_path, form):
    form.fields = [*form.fields, "first_name", "last_name"]
    form.save()
    path = write(tmp_path, "Nome;Sobrenome;E-mail;UF;Município;Razão social\n"
                           "Maria Clara;da Silva;mc@x.com.br;rj;Niterói;Paletes Niterói Ltda\n")
    assert importer.auto_columns(importer.CsvFile(path).header, form) == [
        "first_name", "last_name", "email", "state", "city", "company"]
    report = importer.import_csv(path=path, form=form, workers=0)
    assert (report.created, report.rejected) == (1, 0)
    lead = Lead.objects.get()
    assert (lead.first_name, lead.last_name, lead.state, lead.city, lead.company) == (
        "Maria Clara", "da Silva", "RJ", "Niterói", "Paletes Niterói Ltda")
    # Only a bare "Nome": a full name stays the full name.
    assert importer.auto_columns(["Nome completo", "Sobrenome"], form) == ["name", "last_name"]


def test_missing_required_lists_what_the_form_requires_and_no_column_gives(db):
    form = FormFactory(slug="exige", fields=["email", "name", "company", "interest", "segmento", "consent"],
                       required_fields=["company", "last_name", "segmento", "interest"], consent_required=True)
    missing = importer.missing_required(form, ["email", None, None])
    assert [key for key, _label in missing] == ["company", "last_name", "segmento", "interest", "consent"]
    assert str(dict(missing)["company"]) == "company"  # its label
    # A full name gives the last name; the form's default interest fills the interest.
    form.default_interest = "Paletes"
    assert importer.missing_required(form, ["email", "name", "company", "segmento", "consent"]) == []


def test_the_command_refuses_a_mapping_that_would_reject_every_row_unless_told(tmp_path):
    FormFactory(slug="exige", fields=["email", "name", "company"], required_fields=["company"])
    path = write(tmp_path, "E-mail;Nome\r\nana@cliente.com.br;Ana\r\n")
    with pytest.raises(CommandError) as refused:
        run(path, form_slug="exige")
    assert str(refused.value) == (
        "No column gives what form 'exige' requires (company): every row would be rejected. Send a column to it "
        'with --map "COLUMN=FIELD", or import anyway with --allow-missing.')
    assert Lead.objects.count() == 0
    out, err = run(path, "--dry-run", form_slug="exige")
    assert "Warning: No column gives what form 'exige' requires (company)" in err
    out, err = run(path, "--allow-missing", form_slug="exige")
    assert "Warning:" in err and Lead.objects.count() == 0 and "rejected: 1" in out.lower()


def test_backslashes_tabs_line_breaks_and_a_literal_backslash_n_survive_the_copy(tmp_path, caplog):
    """PostgreSQL writes imported rows with COPY, whose text format gives tabs, line
    breaks and backslashes a meaning: a value holding them comes back as it was, and
    the text "\\N" is not read as NULL."""
    FormFactory(fields=["email", "name", "company", "city", "message", "segmento"])
    path = write(tmp_path, (
        "Nome;E-mail;Empresa;Cidade;Segmento;Mensagem\n"
        'Ana;ana@x.com.br;C:\\Paletes;\\N;"aspas ""duplas"" e \\barra";"linha 1\r\nlinha\t2 \\N"\n'
        "Bia;bia@x.com.br;;\\N;;\n"
        "Caio;caio@x.com.br;;;;\n"
    ))
    caplog.set_level(logging.INFO, logger="leads.importer")
    run(path)
    assert "row by row" not in caplog.text  # written set-based (COPY on PostgreSQL), not redone after an error
    ana = Lead.objects.get(email="ana@x.com.br")
    assert (ana.company, ana.city, ana.message) == ("C:\\Paletes", "\\N", "linha 1\r\nlinha\t2 \\N")
    assert ana.attributes == {"segmento": 'aspas "duplas" e \\barra'}
    assert Lead.objects.get(email="bia@x.com.br").city == "\\N"
    caio = Lead.objects.get(email="caio@x.com.br")
    assert (caio.company, caio.city, caio.message, caio.attributes) == ("", "", "", {})
    assert LeadEvent.objects.get(lead=ana, kind=LeadEvent.Kind.CAPTURED).data["import"] == "leads.csv"


def test_the_lines_the_cleaning_processes_write_are_those_the_writer_would_build(tmp_path, form, monkeypatch):
    """On PostgreSQL each row's new lead, events and consent are turned into COPY lines
    by the cleaning processes; the writer builds them itself when that is off. Both give
    the same rows: new people, rows that merge into a lead of the same batch (whose line
    is built again), consent, rules' verdicts, tabs and backslashes."""
    from django.db import connection

    from scoring.models import Ruleset

    from ..scoring.factories import pallet_ruleset

    if connection.vendor != "postgresql":
        pytest.skip("COPY lines are PostgreSQL's")
    pallet_ruleset(state=Ruleset.State.ACTIVE)
    rows = [f"p{i}@x.com.br;Pessoa\t{i};{'SP' if i % 3 else 'BA'};{'paletes PBR' if i % 2 else 'caixas'};"
            f"{'R$ 30.000,00' if i % 4 else ''};{'sim' if i % 5 else ''};C:\\seg {i}\n" for i in range(40)]
    # Merged in the batch that created them (p4 gets the budget it lacked, so its line changes).
    rows[6:6] = ["p3@x.com.br;;;;R$ 1,00;sim;outro\n", "p4@x.com.br;Quatro;RJ;paletes PBR;50000;;\n"]
    path = write(tmp_path, "E-mail;Nome;Estado;Interesse;Orçamento;Consent;Segmento\n" + "".join(rows))

    def snapshot():
        leads = {lead.pk: lead.email for lead in Lead.objects.all()}
        columns = [f.attname for f in Lead._meta.concrete_fields if f.attname not in ("id",)]
        def plain(value):  # each run has its own clock: a timestamp counts as set or not
            return "<time>" if isinstance(value, datetime.datetime) else str(value)

        return (
            sorted(tuple(plain(v) for v in values) for values in Lead.objects.values_list(*columns)),
            sorted((leads[e.lead_id], e.kind, e.from_status, e.to_status, e.reason_id, str(e.data), e.actor_id)
                   for e in LeadEvent.objects.all()),
            sorted((leads[c.lead_id], c.action, c.form_id, c.text, c.version, c.note) for c in Consent.objects.all()),
        )

    results = []
    for render in (False, True):
        monkeypatch.setattr(importer, "RENDER_IN_WORKERS", render)
        Lead.objects.all().delete()
        report = importer.import_csv(path=path, form=form, empty_values=(), batch_size=16, workers=0)
        assert (report.created, report.updated, report.per_row_batches) == (40, 2, 0)
        results.append(snapshot())
    without, with_lines = results
    assert len(with_lines[1]) > 80 and len(with_lines[2]) > 30
    assert without == with_lines


def test_rows_cleaned_under_rules_since_replaced_are_judged_by_the_active_ones(tmp_path, form, monkeypatch):
    """Rows are cleaned (and scored) a little before they are written: if other rules
    were activated in between, the writer judges the new leads by those, with the
    explanation, instead of the lines the cleaning process wrote."""
    from django.db import connection

    from scoring.models import Ruleset

    from ..scoring.factories import pallet_ruleset

    if connection.vendor != "postgresql":
        pytest.skip("COPY lines are PostgreSQL's")
    active = pallet_ruleset(state=Ruleset.State.ACTIVE)
    context = importer._Cleaner._context

    def cleaned_under_other_rules(self):
        found = context(self)
        found.render.ruleset_id = -1  # as if another ruleset had been active then
        return found

    monkeypatch.setattr(importer._Cleaner, "_context", cleaned_under_other_rules)
    path = write(tmp_path, "E-mail;Estado;Interesse\nperto@x.com.br;SP;paletes PBR\nlonge@x.com.br;BA;paletes PBR\n")
    report = importer.import_csv(path=path, form=form, empty_values=(), workers=0)
    assert report.created == 2
    far = Lead.objects.get(email="longe@x.com.br")
    assert (far.status, far.reason.slug) == ("out_of_focus", "outside_service_area")
    event = far.events.get(kind=LeadEvent.Kind.STATUS_CHANGED)
    assert event.data["ruleset"] == active.pk and event.data["explanation"]
    assert far.events.filter(kind=LeadEvent.Kind.CAPTURED).count() == 1
