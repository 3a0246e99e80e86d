#!/usr/bin/env python
"""CSV import benchmark: ``manage.py import_leads`` on a generated file of N rows.

Generates realistic pt-BR CSV files (Excel-style: ';' separated, cp1252 by default;
names, companies, phones written every way people write them, budgets such as
"R$ 5.000,00" or "5k", placeholders "Selecione" and "-", quoted messages with ';' and
line breaks, duplicates of earlier rows, phone-only rows, invalid rows, blank lines)
in a temporary directory, then times in the same run, each on a fresh PostgreSQL
database copied from a migrated template with an active 5-rule ruleset:

  (a) the baseline: a per-row ORM import of a 10,000-row sample (for each row:
      ``clean_for_form`` then ``services.lead_capture``, what a straightforward
      implementation does);
  (b) ``manage.py import_leads`` on the same sample;
  (c) ``manage.py import_leads`` on a file 1/10 the size of the big one;
  (d) ``manage.py import_leads`` on the N-row file.

Each import runs in its own process; its peak memory is that process's maximum RSS
(``os.wait4``). The counts each import reports are checked against what the
generator wrote. Prints rows, rows/s, peak RSS, the baseline rate, the ratio and the
targets.

    .venv/bin/python bench/import.py [--rows 1000000] [--database-url postgres://...]
    .venv/bin/python bench/import.py --quick           # 20,000 rows, 2,000-row baseline, no targets

Targets on the 2-core machine: >= 10,000 rows/s, >= 30x the per-row import, and
memory flat as the file grows (the N-row import's peak RSS within 25 MB of the
N/10-row one's).
"""

import argparse
import csv
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._report import figure  # noqa: E402
from bench._server import PYTHON, ROOT, bench_env, machine, manage  # noqa: E402

MILLION = 1_000_000
TARGET_RATE = 10_000
TARGET_RATIO = 30
TARGET_MEMORY_GROWTH_MB = 25
FORM_SLUG = "planilha"
IMPORT_ARGS = ["--form", FORM_SLUG, "--map", "Celular=phone", "--map", "Funcionários=company_size",
               "--empty", "Selecione", "--empty", "-"]

# --- The generated file -------------------------------------------------------------------------

HEADER = ["Nome", "E-mail", "Celular", "Empresa", "Cargo", "Funcionários", "Estado", "Cidade", "Interesse",
          "Orçamento", "Mensagem", "utm_source", "utm_campaign", "Segmento"]
FIRST = ["Ana", "João", "Maria", "José", "Fernanda", "Carlos", "Juliana", "Paulo", "Patrícia", "Lucas", "Aline",
         "Marcos", "Camila", "Rafael", "Beatriz", "Rodrigo", "Luana", "André", "Gabriela", "Thiago", "Conceição",
         "Antônio", "Letícia", "Sérgio", "Márcia", "Vinícius", "Débora", "Cláudio", "Íris", "Fábio"]
LAST = ["Silva", "Souza", "Oliveira", "Santos", "Pereira", "Lima", "Ferreira", "Costa", "Rodrigues", "Almeida",
        "Nascimento", "Araújo", "Carvalho", "Gomes", "Ribeiro", "Martins", "Rocha", "Barbosa", "da Conceição",
        "de Assunção", "Magalhães", "Simões", "Brandão", "Falcão"]
COMPANY = ["Transportes", "Logística", "Alimentos", "Metalúrgica", "Distribuidora", "Indústria", "Comércio",
           "Atacadão", "Agro", "Bebidas", "Química", "Embalagens", "Cerâmica", "Móveis"]
DOMAINS = ["gmail.com", "hotmail.com", "outlook.com", "yahoo.com.br", "uol.com.br", "bol.com.br", "empresa.com.br",
           "industria.ind.br", "logistica.com.br", "agro.com.br"]
STATES = ["SP"] * 10 + ["São Paulo", "sp", "Sao Paulo", "RJ", "Rio de Janeiro", "MG", "Minas Gerais", "PR",
                        "Paraná", "SC", "RS", "BA", "GO", "Goiás", "PE", "ES", "DF", "Selecione", ""]
CITIES = ["São Paulo", "Sao Paulo", "Campinas", "Guarulhos", "Osasco", "Santo André", "Ribeirão Preto", "Sorocaba",
          "Rio de Janeiro", "Belo Horizonte", "Curitiba", "Porto Alegre", "Salvador", "Goiânia", "-", ""]
INTERESTS = ["Paletes PBR", "palete sob medida", "Paletes de madeira", "PALETES usados", "reforma de paletes",
             "Caixas de madeira", "Embalagens de papelão", "manutenção de empilhadeira", "Estrados plásticos", ""]
TITLES = ["Diretor de Logística", "Gerente de Compras", "Sócio-diretor", "CEO", "Analista de Compras", "Comprador",
          "Coordenador de Logística", "Assistente Administrativo", "Estagiário", "Proprietário", "Selecione", ""]
SIZES = ["", "", "5", "12", "30", "50", "51-200", "120", "200+", "1.000", "5000"]
BUDGETS = ["", "", "", "R$ 5.000,00", "5000", "5k", "12.500", "R$ 80 mil", "2500,50", "R$ 1.200", "150000", "20k"]
UTM = [("", ""), ("", ""), ("google", "paletes-sp"), ("facebook", "palete-pbr-2026"), ("linkedin", "institucional")]
SEGMENTS = ["", "", "indústria", "logística", "atacado", "varejo", "agro"]
MESSAGES = ["", "", "", "Quero um orçamento", "Preciso de 200 paletes; entrega em Jundiaí",
            'Vi o anúncio "Paletes PBR" no Google', "Ligar depois das 14h, por favor.",
            "Temos demanda mensal.\nFavor enviar catálogo"]
BAD = [("E-mail", "maria.silva@"), ("E-mail", "joao at empresa.com.br"), ("Estado", "Narnia"),
       ("Celular", "123"), ("Orçamento", "muito"), ("E-mail", "")]
PHONE_AREAS = ["11", "19", "21", "41", "51"]


def ascii_slug(text):
    import unicodedata

    return re.sub(r"[^a-z]", "", unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower())


def person(i):
    """The identity of person ``i``: always the same for the same ``i`` (a duplicate row
    repeats it without storing it)."""
    first, last = FIRST[i * 7 % len(FIRST)], LAST[i * 11 % len(LAST)]
    domain = DOMAINS[i * 3 % len(DOMAINS)]
    return first, last, f"{ascii_slug(first)}.{ascii_slug(last)}.{i}@{domain}"


def phone_only(i):
    digits = f"{i:08d}"
    return f"(31) 9{digits[:4]}-{digits[4:]}"


def generate(path, rows, *, seed, encoding):
    """Write ``rows`` data rows; return the counts an import must report."""
    rng = random.Random(seed)
    expected = {"rows": 0, "created": 0, "updated": 0, "rejected": 0, "skipped": 0}
    email_people = array("q")
    phone_people = array("q")
    next_person = 0
    with open(path, "w", encoding=encoding, newline="") as handle:
        writer = csv.writer(handle, delimiter=";", lineterminator="\r\n")
        writer.writerow(HEADER)
        for _ in range(rows):
            expected["rows"] += 1
            roll = rng.random()
            if roll < 0.001:
                writer.writerow([""] * len(HEADER))
                expected["skipped"] += 1
                continue
            first = rng.choice(FIRST)
            last = rng.choice(LAST)
            phone_area = rng.choice(PHONE_AREAS)
            row = {
                "Nome": f"{first} {last}", "E-mail": "",
                "Celular": rng.choice([f"({phone_area}) 9{rng.randrange(6000, 9999)}-{rng.randrange(10000):04d}",
                                       f"{phone_area}9{rng.randrange(60000000, 99999999)}", ""]),
                "Empresa": rng.choice([f"{rng.choice(COMPANY)} {rng.choice(LAST)} Ltda", "-", ""]),
                "Cargo": rng.choice(TITLES), "Funcionários": rng.choice(SIZES), "Estado": rng.choice(STATES),
                "Cidade": rng.choice(CITIES), "Interesse": rng.choice(INTERESTS), "Orçamento": rng.choice(BUDGETS),
                "Mensagem": rng.choice(MESSAGES), "Segmento": rng.choice(SEGMENTS),
            }
            row["utm_source"], row["utm_campaign"] = rng.choice(UTM)
            if roll < 0.016:  # invalid: rejected with its line and reason
                _first, _last, email = person(next_person)
                row["E-mail"] = email
                column, value = rng.choice(BAD)
                row[column] = value
                if column == "E-mail" and not value:
                    row["Celular"] = ""  # neither email nor phone
                expected["rejected"] += 1
            elif roll < 0.066 and len(email_people):  # the same person again, written differently
                first, last, email = person(email_people[rng.randrange(len(email_people))])
                row["Nome"] = f"{first} {last}"
                row["E-mail"] = rng.choice([email, email.upper(), f"  {email.title()} "])
                expected["updated"] += 1
            elif roll < 0.076 and len(phone_people):  # a phone-only person again
                row["Celular"] = phone_only(phone_people[rng.randrange(len(phone_people))])
                expected["updated"] += 1
            elif roll < 0.096:  # a new phone-only person
                row["Celular"] = phone_only(next_person)
                phone_people.append(next_person)
                next_person += 1
                expected["created"] += 1
            else:  # a new person with an email
                first, last, email = person(next_person)
                row["Nome"] = f"{first} {last}"
                row["E-mail"] = email
                email_people.append(next_person)
                next_person += 1
                expected["created"] += 1
            writer.writerow([row[name] for name in HEADER])
    return expected


# --- Databases ------------------------------------------------------------------------------------


def _admin_connection(database_url):
    import psycopg2

    url = urlparse(database_url)
    conn = psycopg2.connect(url._replace(path="/postgres").geturl())
    conn.autocommit = True
    return conn


def drop_database(database_url, name):
    conn = _admin_connection(database_url)
    with conn.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                       "AND pid <> pg_backend_pid()", [name])
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
    conn.close()


def create_database(database_url, name, template=None):
    drop_database(database_url, name)
    conn = _admin_connection(database_url)
    with conn.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    conn.close()


def with_name(database_url, name):
    return urlparse(database_url)._replace(path=f"/{name}").geturl()


SEED = """
from leads.models import Form, Source
from scoring.models import Ruleset
from tests.scoring.factories import pallet_ruleset
source, _ = Source.objects.get_or_create(slug="planilha", defaults={"name": "Planilha", "channel": "import"})
Form.objects.create(slug="planilha", name="Planilha de feira", source=source, fields=[
    "email", "name", "phone", "company", "job_title", "company_size", "state", "city", "interest", "budget",
    "message", "segmento"])
pallet_ruleset(state=Ruleset.State.ACTIVE, submission_points=5)
"""


def prepare_template(database_url, template, redis_url):
    create_database(database_url, template)
    env = bench_env(with_name(database_url, template), redis_url)
    manage(env, "migrate", "--noinput", "-v0")
    manage(env, "shell", "-c", SEED)


# --- Runs -------------------------------------------------------------------------------------------


def run_measured(command, env):
    """Run ``command``; return (stdout, seconds, peak RSS in MB) of that process alone."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.DEVNULL, text=True)
        _pid, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - start
        out.seek(0)
        text = out.read()
    if process.returncode:
        sys.exit(f"{' '.join(map(str, command))} failed:\n{text}")
    return text, seconds, usage.ru_maxrss / 1024


def set_based(env, path, batch_size):
    command = [PYTHON, "manage.py", "import_leads", str(path), *IMPORT_ARGS]
    if batch_size:
        command += ["--batch-size", str(batch_size)]
    text, _seconds, rss = run_measured(command, env)
    figures = {name: int(value.replace(",", "")) for name, value in
               re.findall(r"^\s+(rows|created|updated|rejected):\s+([\d,]+)", text, re.M)}
    skipped = re.search(r"\(([\d,]+) blank", text)
    figures["skipped"] = int(skipped.group(1).replace(",", "")) if skipped else 0
    match = re.search(r"time:\s+([\d.]+) s", text)
    figures["seconds"] = float(match.group(1))
    figures["rate"] = figures["rows"] / figures["seconds"]
    figures["rss"] = rss
    return figures


def per_row(env, path):
    text, _seconds, rss = run_measured([PYTHON, str(Path(__file__).resolve()), "--per-row-worker", str(path)], env)
    match = re.search(r"PER_ROW rows=(\d+) seconds=([\d.]+) created=(\d+) updated=(\d+) rejected=(\d+)", text)
    rows, seconds = int(match.group(1)), float(match.group(2))
    return {"rows": rows, "seconds": seconds, "rate": rows / seconds, "rss": rss,
            "created": int(match.group(3)), "updated": int(match.group(4)), "rejected": int(match.group(5))}


def per_row_worker(path):
    """The baseline, run under Django: each row cleaned and captured on its own."""
    import django

    django.setup()
    from leads import importer, services
    from leads.models import Form

    form = Form.objects.select_related("source").get(slug=FORM_SLUG)
    overrides = {"Celular": "phone", "Funcionários": "company_size"}
    empty = ("Selecione", "-")
    csv_file = importer.CsvFile(path)
    columns = importer.resolve_columns(csv_file.header, form, overrides)
    mapped = [(position, key) for position, key in enumerate(columns) if key]
    rows = created = updated = rejected = 0
    start = time.perf_counter()
    for _line, cells in csv_file.rows():
        rows += 1
        if not any(cell.strip() for cell in cells):
            continue
        payload = {key: cells[position] for position, key in mapped}
        clean = services.clean_for_form(form, payload, empty_values=empty)
        if not clean.is_valid:
            rejected += 1
            continue
        _lead, was_created = services.lead_capture(clean=clean, form=form)
        created += was_created
        updated += not was_created
    seconds = time.perf_counter() - start
    print(f"PER_ROW rows={rows} seconds={seconds:.3f} created={created} updated={updated} rejected={rejected}")


def check(label, figures, expected):
    wrong = {name: (figures.get(name), value) for name, value in expected.items() if figures.get(name) != value}
    if wrong:
        print(f"  !! {label}: counts differ from the generator's (got, expected): {wrong}")
    return not wrong


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=MILLION, help="rows of the big file (default 1,000,000)")
    parser.add_argument("--sample", type=int, default=10_000, help="rows of the per-row baseline (default 10,000)")
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/funil_bench_import",
                        help="recreated; a template database <name>_template is created beside it")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/10", help="only for the settings")
    parser.add_argument("--encoding", default="cp1252", choices=["cp1252", "utf-8", "utf-8-sig"])
    parser.add_argument("--batch-size", type=int, default=None, help="import batch size (default: the command's)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the generated files and the databases")
    parser.add_argument("--quick", action="store_true",
                        help="a small run (20,000 rows, 2,000-row baseline) for CI: prints, asserts no target")
    parser.add_argument("--per-row-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.rows, args.sample = 20_000, 2_000
    if args.per_row_worker:
        return per_row_worker(args.per_row_worker)

    name = urlparse(args.database_url).path.lstrip("/")
    template = f"{name}_template"
    env = bench_env(args.database_url, args.redis_url)
    small_rows = max(args.rows // 10, 1)
    sample_rows = min(args.sample, args.rows)
    print(f"machine: {machine()}")
    print(f"database: {args.database_url} (recreated for each run from {template})")

    folder = Path(tempfile.mkdtemp(prefix="funil-bench-import-"))
    files = {}
    start = time.perf_counter()
    for label, rows, seed in (("sample", sample_rows, args.seed + 1), ("small", small_rows, args.seed),
                              ("big", args.rows, args.seed)):
        path = folder / f"leads-{label}-{rows}.csv"
        files[label] = (path, generate(path, rows, seed=args.seed if label != "sample" else seed,
                                       encoding=args.encoding))
    print(f"generated {args.rows:,} + {small_rows:,} + {sample_rows:,} rows ({args.encoding}, ';') in "
          f"{time.perf_counter() - start:.1f} s: {files['big'][0]} ({files['big'][0].stat().st_size / 2**20:.0f} MB)")
    expected = files["big"][1]
    print(f"  the big file: {expected['created']:,} new people, {expected['updated']:,} repeated rows, "
          f"{expected['rejected']:,} invalid rows, {expected['skipped']:,} blank lines")
    prepare_template(args.database_url, template, args.redis_url)

    results, ok = {}, True
    try:
        for label, runner in (("per-row", "per_row"), ("sample", "set"), ("small", "set"), ("big", "set")):
            path, counts = files["sample" if label == "per-row" else label]
            create_database(args.database_url, name, template=template)
            print(f"running {label} ({counts['rows']:,} rows)...", flush=True)
            figures = per_row(env, path) if runner == "per_row" else set_based(env, path, args.batch_size)
            results[label] = figures
            ok &= check(label, figures, {key: counts[key] for key in ("created", "updated", "rejected")})
    finally:
        if not args.keep:
            drop_database(args.database_url, name)
            drop_database(args.database_url, template)
            for path, _counts in files.values():
                path.unlink(missing_ok=True)
                path.with_name(f"{path.stem}.rejected.csv").unlink(missing_ok=True)
            folder.rmdir()

    base, big, small, sample = results["per-row"], results["big"], results["small"], results["sample"]
    ratio = big["rate"] / base["rate"]
    growth = big["rss"] - small["rss"]
    print()
    print(f"{'run':<44}{'rows':>11}{'seconds':>9}{'rows/s':>9}{'peak RSS':>10}")
    for label, figures in (
        ("per-row ORM import (clean + lead_capture)", base), ("import_leads, same sample", sample),
        ("import_leads, 1/10 file", small), ("import_leads, full file", big),
    ):
        print(f"{label:<44}{figures['rows']:>11,}{figures['seconds']:>9.1f}{figures['rate']:>9,.0f}"
              f"{figures['rss']:>8.0f} MB")
    print()
    print(f"ratio import_leads (full file) / per-row: {ratio:.1f}x "
          f"(on the same sample: {sample['rate'] / base['rate']:.1f}x)")
    print(f"peak RSS growth from {small['rows']:,} to {big['rows']:,} rows: {growth:+.1f} MB")
    checks = [
        (f">= {TARGET_RATE:,} rows/s", big["rate"] >= TARGET_RATE),
        (f">= {TARGET_RATIO}x the per-row import", ratio >= TARGET_RATIO),
        (f"memory flat (growth <= {TARGET_MEMORY_GROWTH_MB} MB for 10x the rows)", growth <= TARGET_MEMORY_GROWTH_MB),
        ("counts match the generated file", ok),
    ]
    print()
    for label, passed in checks:
        print(f"  [{'ok' if passed else 'MISSED'}] {label}")
    applies = None if args.quick else True
    figure(f"import: rows/s, {big['rows']:,}-row file", f"{big['rate']:,.0f}",
           baseline=f"{base['rate']:,.0f} (per-row ORM, {base['rows']:,} rows)", ratio=f"{ratio:.1f}x",
           target=f">= {TARGET_RATE:,} rows/s, >= {TARGET_RATIO}x",
           met=applies and big["rate"] >= TARGET_RATE and ratio >= TARGET_RATIO)
    figure(f"import: peak RSS growth {small['rows']:,} -> {big['rows']:,} rows", f"{growth:+.1f} MB",
           target=f"<= {TARGET_MEMORY_GROWTH_MB} MB", met=applies and growth <= TARGET_MEMORY_GROWTH_MB)
    if args.quick:  # too small for the targets to mean anything; only the counts must be right
        return 0 if ok else 1
    return 0 if all(passed for _label, passed in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
