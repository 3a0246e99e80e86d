"""Realistic leads and timeline events for the rescoring benchmark, loaded with
PostgreSQL COPY (never ORM inserts), streamed in blocks so that a million leads do
not sit in memory at once.

The shapes follow a Brazilian B2B company selling wooden pallets: most leads in São
Paulo, interests with and without "palete", free-mail addresses, empty budgets and
company sizes, UTM tags, a few custom fields, and statuses a previous ruleset gave
(some set by a person, some converted).
"""

import io
import json
import random
from datetime import timedelta

BLOCK = 50_000

FIRST_NAMES = ["Ana", "João", "Maria", "José", "Fernanda", "Carlos", "Juliana", "Paulo", "Patrícia", "Lucas",
               "Aline", "Marcos", "Camila", "Rafael", "Beatriz", "Rodrigo", "Luana", "André", "Gabriela", "Thiago"]
LAST_NAMES = ["Silva", "Souza", "Oliveira", "Santos", "Pereira", "Lima", "Ferreira", "Costa", "Rodrigues",
              "Almeida", "Nascimento", "Araújo", "Carvalho", "Gomes", "Ribeiro", "Martins", "Rocha", "Barbosa"]
COMPANY_WORDS = ["Transportes", "Logística", "Alimentos", "Metalúrgica", "Distribuidora", "Indústria",
                 "Comércio", "Atacadão", "Agro", "Bebidas", "Química", "Embalagens"]
FREE_MAIL = [("gmail.com", 24), ("hotmail.com", 8), ("outlook.com", 4), ("yahoo.com.br", 3), ("bol.com.br", 2),
             ("uol.com.br", 2), ("", 57)]  # "" = the company's own domain
STATES = [("SP", 58), ("RJ", 8), ("MG", 8), ("PR", 5), ("SC", 3), ("RS", 3), ("BA", 2), ("GO", 2), ("PE", 2),
          ("ES", 2), ("DF", 1), ("", 6)]
CITIES = {
    "SP": [("São Paulo", 30), ("Sao Paulo", 4), ("SÃO PAULO", 2), ("Guarulhos", 8), ("Campinas", 8),
           ("Osasco", 5), ("Santo André", 5), ("São Bernardo do Campo", 5), ("Sorocaba", 5),
           ("Ribeirão Preto", 5), ("Jundiaí", 5), ("Barueri", 5), ("", 13)],
    "RJ": [("Rio de Janeiro", 70), ("Niterói", 20), ("", 10)],
    "MG": [("Belo Horizonte", 60), ("Contagem", 20), ("Uberlândia", 10), ("", 10)],
    "PR": [("Curitiba", 70), ("Londrina", 20), ("", 10)],
}
INTERESTS = [("Paletes PBR", 18), ("palete sob medida", 10), ("Paletes de madeira", 14), ("PALETES usados", 6),
             ("reforma de paletes", 5), ("palete descartável para exportação", 5), ("Pallets", 4),
             ("Caixas de madeira", 8), ("Embalagens de papelão", 6), ("manutenção de empilhadeira", 4),
             ("Estrados plásticos", 5), ("", 15)]
JOB_TITLES = [("Diretor de Logística", 6), ("Gerente de Compras", 10), ("Sócio-diretor", 4), ("CEO", 3),
              ("Analista de Compras", 12), ("Comprador", 12), ("Coordenador de Logística", 8),
              ("Assistente Administrativo", 8), ("Estagiário", 3), ("Supervisor de Armazém", 6),
              ("Gerente Industrial", 4), ("Proprietário", 6), ("Estudante", 2), ("", 16)]
COMPANY_SIZES = [(None, 22), (3, 8), (8, 10), (15, 10), (30, 10), (50, 9), (80, 8), (120, 7), (250, 6),
                 (500, 5), (1200, 3), (5000, 2)]
BUDGETS = [(None, 32), ("500.00", 5), ("1000.00", 6), ("2500.00", 7), ("4000.00", 6), ("5000.00", 8),
           ("8000.00", 8), ("12000.00", 8), ("20000.00", 7), ("35000.00", 5), ("50000.00", 4), ("80000.00", 2),
           ("150000.00", 2)]
UTM_SOURCES = [("google", 25), ("facebook", 10), ("instagram", 8), ("linkedin", 7), ("newsletter", 5), ("", 45)]
UTM_MEDIUMS = {"google": "cpc", "facebook": "social", "instagram": "social", "linkedin": "social",
               "newsletter": "email", "": ""}
UTM_CAMPAIGNS = [("paletes-sp", 20), ("palete-pbr-2026", 10), ("institucional", 10), ("black-friday", 5),
                 ("", 55)]
SEGMENTS = [("indústria", 30), ("logistica", 25), ("Logística", 5), ("atacado", 15), ("varejo", 15), ("agro", 10)]
TRUCKS = [(2, 20), (5, 20), (12, 20), (30, 10), ("8", 10), ("25", 10), ("muitos", 5), (True, 5)]
PRIOR = [("qualified", 30), ("disqualified", 36), ("out_of_focus", 28), ("new", 6)]

SOURCES = [("site", "Site", "contact_form"), ("newsletter", "Newsletter", "newsletter"),
           ("indicacao", "Indicação", "other"), ("feira", "Feira do setor", "other"),
           ("linkedin-ads", "LinkedIn Ads", "social"), ("google-ads", "Google Ads", "other"),
           ("importacao", "Importação de planilha", "import")]
SOURCE_WEIGHTS = [45, 10, 6, 5, 8, 16, 10]
FORMS = [("contato", "Contato", "site"), ("orcamento", "Orçamento", "site"), ("newsletter", "Newsletter", "newsletter")]

EVENT_KINDS = [("resubmitted", 35), ("email_opened", 30), ("email_sent", 10)]


def _weighted(rng, pairs, k):
    values, weights = zip(*pairs, strict=True)
    return rng.choices(values, weights=weights, k=k)


def _null(value):
    return "\\N" if value is None else str(value)


def catalogue():
    """Sources, forms and reasons the generated leads refer to (created with the ORM)."""
    from leads.models import Form, Reason, Source

    sources = {slug: Source.objects.get_or_create(slug=slug, defaults={"name": name, "channel": channel})[0].pk
               for slug, name, channel in SOURCES}
    forms = {slug: Form.objects.get_or_create(slug=slug, defaults={"name": name, "source_id": sources[source]})[0].pk
             for slug, name, source in FORMS}
    reasons = {}
    for slug, label, kind in (("outside_service_area", "Fora da área de atendimento", "out_of_focus"),
                              ("need_not_served", "Procura o que não vendemos", "out_of_focus"),
                              ("no_budget", "Sem orçamento agora", "disqualified"),
                              ("not_a_buyer", "Não compra", "disqualified"),
                              ("below_threshold", "Below the qualification threshold", "disqualified")):
        reasons[slug] = Reason.objects.get_or_create(slug=slug, defaults={"label": label, "kind": kind})[0].pk
    return sources, forms, reasons


LEAD_COLUMNS = (
    "id", "email", "first_name", "last_name", "phone", "company", "job_title", "company_size", "country", "state",
    "city", "interest", "budget", "budget_currency", "message", "source_id", "form_id", "utm_source", "utm_medium",
    "utm_campaign", "utm_term", "utm_content", "owner_id", "status", "status_set_by", "status_changed_by_id",
    "reason_id", "reason_note", "score", "temperature", "deal_value", "attributes", "created_at", "updated_at",
    "qualified_at", "disqualified_at", "out_of_focus_at", "converted_at", "last_activity_at", "requalify_at",
)
EVENT_COLUMNS = ("lead_id", "kind", "actor_id", "from_status", "to_status", "reason_id", "note", "data",
                 "created_at")


def _lead_block(rng, first_id, count, total, now, sources, forms, reasons):
    """(lead rows as COPY text, event rows as COPY text) for ids first_id.. first_id+count-1
    of ``total``: ids follow creation time over the last 900 days, more leads lately."""
    k = count
    states = _weighted(rng, STATES, k)
    interests = _weighted(rng, INTERESTS, k)
    titles = _weighted(rng, JOB_TITLES, k)
    sizes = _weighted(rng, COMPANY_SIZES, k)
    budgets = _weighted(rng, BUDGETS, k)
    mails = _weighted(rng, FREE_MAIL, k)
    utms = _weighted(rng, UTM_SOURCES, k)
    campaigns = _weighted(rng, UTM_CAMPAIGNS, k)
    source_slugs = rng.choices([slug for slug, _, _ in SOURCES], weights=SOURCE_WEIGHTS, k=k)
    priors = _weighted(rng, PRIOR, k)
    form_by_source = {sources["site"]: [forms["contato"], forms["orcamento"]],
                      sources["newsletter"]: [forms["newsletter"]]}
    prior_reasons = {"disqualified": [reasons["no_budget"], reasons["below_threshold"]],
                     "out_of_focus": [reasons["outside_service_area"], reasons["need_not_served"]]}
    leads, events = io.StringIO(), []
    for n in range(k):
        pk = first_id + n
        rand = rng.random
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        word = rng.choice(COMPANY_WORDS)
        company = "" if rand() < 0.06 else f"{word} {last} Ltda"
        slug = f"{word}{last}".lower().replace("í", "i").replace("á", "a").replace("ã", "a").replace("ú", "u")
        if rand() < 0.03:
            email = None
        else:
            domain = mails[n] or f"{slug}{pk % 997}.com.br"
            local = f"{first}.{last}".lower().replace("ã", "a").replace("é", "e").replace("í", "i")
            email = f"{local}.{pk}@{domain}"
        state = states[n]
        city = _weighted(rng, CITIES[state], 1)[0] if state in CITIES else ("" if not state or rand() < 0.2
                                                                             else "Capital")
        source_id = sources[source_slugs[n]] if rand() < 0.95 else None
        form_choices = form_by_source.get(source_id)
        form_id = rng.choice(form_choices) if form_choices else None
        utm = utms[n]
        attributes = {}
        if rand() < 0.45:
            attributes["segmento"] = _weighted(rng, SEGMENTS, 1)[0]
            if rand() < 0.5:
                attributes["caminhoes"] = _weighted(rng, TRUCKS, 1)[0]
        if rand() < 0.1:
            attributes["lista"] = "feira-2025"
        created = now - timedelta(days=900 * (1 - pk / (total + 1)) ** 1.5)
        prior = priors[n]
        roll = rand()
        set_by, converted = ("person", False) if roll < 0.06 else ("person", True) if roll < 0.07 else ("rules", False)
        status = "converted" if converted else prior
        score = rng.randrange(-20, 110)
        temperature = "hot" if score >= 70 else "warm" if score >= 40 else "cold"
        reason = rng.choice(prior_reasons[status]) if status in prior_reasons else None
        stamp = created + timedelta(minutes=1)
        requalify = now + timedelta(days=rng.randrange(-30, 60)) if set_by == "person" and status == "disqualified" \
            and rand() < 0.5 else None
        row = (
            pk, email, first, last, f"+55119{pk:08d}", company, titles[n], sizes[n], "BR" if rand() < 0.98 else "PT",
            state, city, interests[n], budgets[n], "BRL", "", source_id, form_id, utm, UTM_MEDIUMS[utm],
            campaigns[n] if utm else "", "", "", None, status, set_by, None, reason, "", score, temperature,
            "35000.00" if converted else None, json.dumps(attributes, ensure_ascii=False), created.isoformat(),
            stamp.isoformat(), stamp.isoformat() if status == "qualified" else None,
            stamp.isoformat() if status == "disqualified" else None,
            stamp.isoformat() if status == "out_of_focus" else None,
            stamp.isoformat() if converted else None, stamp.isoformat(),
            requalify.isoformat() if requalify else None,
        )
        leads.write("\t".join(map(_null, row)) + "\n")
        events.append((created, f"{pk}\tcaptured\t\\N\t\t\t\\N\t\t{{}}\t{created.isoformat()}\n"))
        age = (now - created).total_seconds()
        for kind, percent in EVENT_KINDS:
            if rand() * 100 < percent:
                at = now - timedelta(seconds=age * rand() ** 3)
                events.append((at, f"{pk}\t{kind}\t\\N\t\t\t\\N\t\t{{}}\t{at.isoformat()}\n"))
    return leads.getvalue(), events


def _other_columns():
    """Lead columns this generator does not fill that must not be NULL, with their model
    default ("" for text): the Lead grows fields (sales' rating...) that have no database default."""
    from leads.models import Lead

    extra = {}
    for field in Lead._meta.concrete_fields:
        if field.column in LEAD_COLUMNS or field.null or not (field.has_default() or field.empty_strings_allowed):
            continue
        default = field.get_default()
        extra[field.column] = json.dumps(default) if isinstance(default, (dict, list)) else default
    return extra


def load(connection, count, *, now, seed=4, progress=print):
    """COPY ``count`` leads (ids 1..count) and their timeline into an empty database."""
    sources, forms, reasons = catalogue()
    rng = random.Random(seed)
    extra = _other_columns()
    suffix = "".join("\t" + _null(value) for value in extra.values())
    lead_copy = f"COPY leads_lead ({', '.join((*LEAD_COLUMNS, *extra))}) FROM STDIN"
    event_copy = f"COPY leads_leadevent ({', '.join(EVENT_COLUMNS)}) FROM STDIN"
    timeline = []
    with connection.cursor() as cursor:
        for first_id in range(1, count + 1, BLOCK):
            size = min(BLOCK, count + 1 - first_id)
            leads, events = _lead_block(rng, first_id, size, count, now, sources, forms, reasons)
            if suffix:
                leads = leads.replace("\n", suffix + "\n")
            cursor.copy_expert(lead_copy, io.StringIO(leads))
            timeline.extend(events)
            if progress and (first_id - 1) % 200_000 == 0 and first_id > 1:
                progress(f"  {first_id - 1:,} leads loaded")
        cursor.execute("SELECT setval(pg_get_serial_sequence('leads_lead', 'id'), %s)", [count])
        # The timeline is appended to as things happen: a lead's events lie apart, among
        # everybody else's, as in production (not next to each other).
        timeline.sort(key=lambda event: event[0])
        for first in range(0, len(timeline), 4 * BLOCK):
            cursor.copy_expert(event_copy, io.StringIO("".join(line for _, line in timeline[first:first + 4 * BLOCK])))
