"""CSV import of leads: streamed, set-based, and normalised and deduplicated exactly
like the public endpoint.

Rows are read lazily from a text stream (UTF-8 with or without BOM, or cp1252;
``,`` or ``;``) and handled in batches. Each row is cleaned by the same function the
endpoint uses (``services.clean_for_form``); each batch is written in one short
transaction: the leads it touches are looked up (and locked) in one or two queries,
merges are computed in Python with the rule of ``services.lead_capture`` (fill empty
fields, never overwrite; dedupe by email, or by phone when there is no email), then
new leads, changed leads and timeline events are written with a few multi-row
statements. If another writer inserted one of the batch's emails meanwhile, the
batch is rolled back and redone row by row through ``services.lead_capture``.

Used by ``manage.py import_leads`` and by the admin upload (an ``ImportJob`` run by a
Celery worker).
"""

import bisect
import codecs
import csv
import datetime
import functools
import hashlib
import io
import itertools
import json
import logging
import multiprocessing
import os
import re
import threading
import time
from array import array
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import NamedTuple

from django.db import DatabaseError, IntegrityError, OperationalError, connection, transaction
from django.db.models import F
from django.utils import timezone, translation
from django.utils.translation import gettext, gettext_noop
from django.utils.translation import gettext_lazy as _

from config.db import database_unavailable, is_write_conflict

from . import normalize, services
from .capture import ALWAYS_ACCEPTED, CleanLead, clean_lead_data
from .models import Consent, Form, ImportJob, Lead, LeadEvent, LeadStatus, StatusSetBy

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 2000
SNIFF_BYTES = 64 * 1024
REJECTED_SAMPLE_SIZE = 100
DELIMITERS = ",;"

# Bytes that are not UTF-8 in a file that started as UTF-8 (a spreadsheet that mixed
# encodings) are read as cp1252 instead of failing the whole import.
_FALLBACK_ERRORS = "funil-cp1252-fallback"


def _decode_as_cp1252(error):
    return error.object[error.start:error.end].decode("cp1252", errors="replace"), error.end


codecs.register_error(_FALLBACK_ERRORS, _decode_as_cp1252)


class ImportFileError(ValueError):
    """The file cannot be read as CSV, or the mapping does not fit it."""


# --- Reading the file -----------------------------------------------------------------


def detect_encoding(sample):
    """'utf-8-sig' (UTF-8, with or without a BOM) when ``sample`` decodes as UTF-8,
    else 'cp1252', what Excel in Portuguese writes."""
    try:
        # Incremental, so that a character cut at the end of the sample is not an error.
        codecs.getincrementaldecoder("utf-8-sig")().decode(sample, final=False)
    except UnicodeDecodeError:
        return "cp1252"
    return "utf-8-sig"


def detect_delimiter(text):
    """',' or ';', by csv.Sniffer over the first lines; when it cannot tell, the one the
    header line has more of."""
    lines = text.splitlines()[:50]
    sample = "\n".join(lines)
    try:
        delimiter = csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:
        delimiter = None
    if not delimiter or delimiter not in DELIMITERS:
        header = lines[0] if lines else ""
        delimiter = ";" if header.count(";") > header.count(",") else ","
    return delimiter


class CsvFile:
    """A CSV file read lazily, row by row, with its detected encoding and delimiter.

    ``rows()`` yields ``(line, cells)``: the line number where the row starts in the
    file (the header is line 1), and its cells. ``bytes_done`` follows the reading,
    for a progress bar that needs no second pass over the file.
    """

    def __init__(self, path, *, encoding=None, delimiter=None):
        self.path = Path(path)
        try:
            self.size = self.path.stat().st_size
            with self.path.open("rb") as handle:
                sample = handle.read(SNIFF_BYTES)
        except OSError as exc:
            raise ImportFileError(f"Cannot read {self.path}: {exc.strerror or exc}") from exc
        self.encoding = encoding or detect_encoding(sample)
        text = codecs.getincrementaldecoder(self.encoding)(errors="replace").decode(sample, final=False)
        self.delimiter = delimiter or detect_delimiter(text)
        self.bytes_done = 0
        self.header = self._read_header()

    def _open(self):
        binary = self.path.open("rb")
        errors = _FALLBACK_ERRORS if self.encoding.startswith("utf-8") else "replace"
        return binary, io.TextIOWrapper(binary, encoding=self.encoding, errors=errors, newline="")

    def _read_header(self):
        binary, text = self._open()
        with text:
            for cells in csv.reader(text, delimiter=self.delimiter):
                if any(cell.strip() for cell in cells):
                    return [cell.strip() for cell in cells]
        raise ImportFileError("The file is empty: it has no header line.")

    def rows(self, *, start_after_line=0):
        """The data rows, lazily. Blank lines are not yielded; the header is skipped."""
        binary, text = self._open()
        with text:
            reader = csv.reader(text, delimiter=self.delimiter)
            header_seen = False
            previous_end = 0
            try:
                for cells in reader:
                    line = previous_end + 1
                    previous_end = reader.line_num
                    if not header_seen:
                        header_seen = any(cell.strip() for cell in cells)
                        continue
                    if line <= start_after_line:
                        continue
                    self.bytes_done = binary.tell()
                    yield line, cells
            except csv.Error as exc:
                raise ImportFileError(f"Line {previous_end + 1}: the file is not valid CSV ({exc}).") from exc
        self.bytes_done = self.size

    def preview(self, count=5):
        return [cells for _line, cells in islice(self.rows(), count)]


def rejected_path_for(path):
    """Where the rejected rows of ``path`` go: beside it, ``<name>.rejected.csv``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.rejected.csv")


# --- Columns to fields ----------------------------------------------------------------

FIELD_LABELS = {"name": _("full name"), "consent": _("consent")}
# More names a column may have to map by itself (besides a field's name and labels).
EXTRA_ALIASES = {"name": [_("name")]}
# What spreadsheets (Brazilian ones above all) call the fields. Compared without case,
# accents, spaces or punctuation ("E-mail", "Razão Social", "MUNICIPIO"). A field's own
# name or label wins over these: a form with a custom field "whatsapp" gets the
# "WhatsApp" column, not the phone. Ambiguous headers stay out ("Contato" may be a name
# or a phone, "Porte" a word the company size would reject, "Região" no state).
SYNONYMS = {
    "email": ["e-mail", "mail", "endereço de e-mail", "e-mail corporativo", "e-mail comercial",
              "correio eletrônico", "email address"],
    "name": ["nome completo", "nome do contato", "nome do cliente", "nome do responsável"],
    "first_name": ["primeiro nome"],
    "last_name": ["sobrenome", "último nome", "surname"],
    "phone": ["telefone", "celular", "whatsapp", "whats", "fone", "tel", "telefone celular", "telefone/whatsapp",
              "celular/whatsapp", "whatsapp/celular", "número de telefone", "número do celular", "mobile",
              "phone number", "telephone", "cell phone"],
    "company": ["empresa", "razão social", "nome da empresa", "nome fantasia", "companhia", "organização",
                "company name", "organization"],
    "job_title": ["cargo", "função", "cargo/função", "profissão", "ocupação", "position"],
    "company_size": ["funcionários", "número de funcionários", "nº de funcionários", "quantidade de funcionários",
                     "qtd de funcionários", "colaboradores", "employees"],
    "country": ["país"],
    "state": ["uf", "estado", "estado/uf", "uf/estado"],
    "city": ["cidade", "município", "localidade"],
    "interest": ["interesse", "produto", "produto de interesse", "serviço de interesse", "product"],
    "budget": ["orçamento", "verba", "investimento", "orçamento previsto", "orçamento estimado"],
    "message": ["mensagem", "observação", "observações", "obs", "comentário", "comentários", "comments", "notes"],
    "consent": ["consentimento", "aceite", "aceite lgpd", "lgpd", "opt-in"],
    "utm_campaign": ["campanha"],
}


def _canonical(text):
    """How a header and a field name are compared: no case, accents, spaces or punctuation."""
    return re.sub(r"[^a-z0-9]", "", normalize.fold(text))


def field_choices(form):
    """The fields a column may go to: what ``form`` accepts (and what every form
    accepts), as ``[(key, label)]``, standard fields first in their usual order."""
    accepted = set(form.get_accepted_fields()) | set(ALWAYS_ACCEPTED)
    accepted.discard(form.honeypot_field)
    keys = [name for name in Form.STANDARD_FIELDS if name in accepted]
    keys += sorted(accepted - set(Form.STANDARD_FIELDS))
    return [(key, _label(key)) for key in keys]


def _label(key):
    if key in FIELD_LABELS:
        return FIELD_LABELS[key]
    try:
        return Lead._meta.get_field(key).verbose_name
    except Exception:  # noqa: BLE001 - a custom field: its name is its label
        return key


def _aliases(key):
    """The names a header may have to map to ``key`` by itself: the key, and its label
    in English and in Brazilian Portuguese, with and without a parenthesised note."""
    names = {key}
    for label in (_label(key), *EXTRA_ALIASES.get(key, ())):
        for language in ("en", "pt-br"):
            with translation.override(language):
                text = str(label)
            names.add(text)
            names.add(re.sub(r"\(.*?\)", "", text))
    return {_canonical(name) for name in names if _canonical(name)}


def auto_columns(header, form):
    """For each column of ``header``, the field it maps to by its name (a field's name
    or label, then a synonym of ``SYNONYMS``), or None. A field goes to its first column.
    A bare "Nome" beside a "Sobrenome" column is the first name, not the full name."""
    keys = [key for key, _label_text in field_choices(form)]
    by_alias = {}
    for key in keys:
        for alias in _aliases(key):
            by_alias.setdefault(alias, key)
    for key in keys:
        for synonym in SYNONYMS.get(key, ()):
            by_alias.setdefault(_canonical(synonym), key)
    columns, taken = [], set()
    for name in header:
        key = by_alias.get(_canonical(name))
        if key in taken:
            key = None
        columns.append(key)
        if key:
            taken.add(key)
    if "last_name" in taken and "name" in taken and "first_name" not in taken and "first_name" in keys:
        position = columns.index("name")
        if _canonical(header[position]) in ("nome", "name"):
            columns[position] = "first_name"
    return columns


def missing_required(form, columns):
    """The fields ``form`` requires (its required fields; consent when it requires
    consent) that no column of the mapping ``columns`` gives: every row would be
    rejected. ``[(key, label)]``."""
    given = {column for column in columns if column}
    # A field the cleaning fills from another column (a full name gives first and last name).
    given_by = {"name": {"name", "first_name"}, "first_name": {"first_name", "name"},
                "last_name": {"last_name", "name"}}
    required = list(dict.fromkeys(form.required_fields or ()))
    if form.consent_required and "consent" not in required:
        required.append("consent")
    missing = []
    for key in required:
        if key == "interest" and form.default_interest:
            continue
        if not given & given_by.get(key, {key}):
            missing.append((key, _label(key)))
    return missing


def resolve_columns(header, form, overrides=None):
    """The field of each column: ``overrides`` ({column name: field, or "" to ignore
    it}) first, then the automatic mapping. Raises ``ImportFileError`` for a column the
    file does not have, a field the form does not accept, or a field given twice."""
    columns = auto_columns(header, form)
    choices = {key for key, _label_text in field_choices(form)}
    by_canonical_choice = {_canonical(key): key for key in choices}
    chosen = {}  # field -> the column an override sent to it
    for column, target in (overrides or {}).items():
        positions = [i for i, name in enumerate(header) if name == column] or [
            i for i, name in enumerate(header) if _canonical(name) == _canonical(column)
        ]
        if not positions:
            raise ImportFileError(f"The file has no column {column!r}. Its columns: {', '.join(header)}.")
        target = (target or "").strip()
        if target:
            key = target if target in choices else by_canonical_choice.get(_canonical(target))
            if key is None:
                raise ImportFileError(
                    f"{target!r} is not a field the form accepts. Fields: {', '.join(sorted(choices))}."
                )
            if key in chosen and chosen[key] != column:
                raise ImportFileError(f"Columns {chosen[key]!r} and {column!r} both go to {key!r}; choose one.")
            chosen[key] = column
            # The field now comes from this column; a column mapped to it automatically lets go.
            columns = [None if existing == key else existing for existing in columns]
        else:
            key = None
        for position in positions:
            columns[position] = key
    return check_columns(header, columns, form)


def check_columns(header, columns, form):
    """Validate a mapping (one field or None per column); returns it as a list."""
    columns = [column or None for column in columns]
    if len(columns) != len(header):
        raise ImportFileError("The mapping does not have one entry per column.")
    choices = {key for key, _label_text in field_choices(form)}
    seen = {}
    for name, key in zip(header, columns, strict=True):
        if key is None:
            continue
        if key not in choices:
            raise ImportFileError(f"{key!r} is not a field the form accepts.")
        if key in seen:
            raise ImportFileError(f"Columns {seen[key]!r} and {name!r} both go to {key!r}; choose one.")
        seen[key] = name
    if not {"email", "phone"} & set(seen):
        raise ImportFileError("Map a column to email or phone: every lead needs one of them.")
    return columns


# --- The report ---------------------------------------------------------------------------


@dataclass
class BatchResult:
    rows: int = 0
    created: int = 0
    updated: int = 0
    rejected: int = 0
    skipped: int = 0
    last_line: int = 0
    rejected_rows: list = field(default_factory=list)  # [(line, errors)]


@dataclass
class ImportReport:
    file_name: str
    dry_run: bool = False
    rows: int = 0
    created: int = 0
    updated: int = 0
    rejected: int = 0
    skipped: int = 0
    rejected_sample: list = field(default_factory=list)  # the first rejected rows: [(line, errors)]
    rejected_path: str = ""
    bytes_done: int = 0
    bytes_total: int = 0
    started: float = field(default_factory=time.monotonic)
    elapsed: float = 0.0
    per_row_batches: int = 0

    @property
    def rate(self):
        return self.rows / self.elapsed if self.elapsed else 0.0

    def add(self, batch):
        self.rows += batch.rows
        self.created += batch.created
        self.updated += batch.updated
        self.rejected += batch.rejected
        self.skipped += batch.skipped
        room = REJECTED_SAMPLE_SIZE - len(self.rejected_sample)
        if room > 0:
            self.rejected_sample.extend(batch.rejected_rows[:room])
        self.elapsed = time.monotonic() - self.started


def format_errors(errors):
    return "; ".join(f"{name}: {message}" for name, message in errors.items())


# --- Rejected rows, and what a dry run remembers --------------------------------------------


class _RejectedWriter:
    """Writes rejected rows to their CSV file as they come (same columns, plus line and
    errors), so that nothing about them is kept in memory."""

    def __init__(self, path, header, *, delimiter=",", resume_after=0):
        self.path = path
        self.header = header
        self.delimiter = delimiter
        self.handle = self.writer = None
        self.written = False
        if path is None:
            return
        if resume_after and path.exists():
            self._trim(resume_after)
            self._open("a")
        elif path.exists():
            path.unlink()  # a stale file of an earlier run would mislead

    def _open(self, mode):
        new = mode == "w" or not self.path.exists()
        self.handle = self.path.open(mode, encoding="utf-8-sig" if new else "utf-8", newline="")
        self.writer = csv.writer(self.handle, delimiter=self.delimiter)
        if new:
            self.writer.writerow([*self.header, "line", "errors"])
        self.written = True

    def _trim(self, last_line):
        """Keep only the rows of committed batches (the worker may have died after
        writing a batch's rejected rows and before committing it)."""
        kept = []
        with self.path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle, delimiter=self.delimiter)
            head = next(reader, None)
            for row in reader:
                if len(row) >= 2 and row[-2].isdigit() and int(row[-2]) <= last_line:
                    kept.append(row)
        with self.path.open("w", encoding="utf-8-sig", newline="") as handle:
            writer = csv.writer(handle, delimiter=self.delimiter)
            writer.writerow(head or [*self.header, "line", "errors"])
            writer.writerows(kept)

    def write(self, rows):
        """``rows``: [(line, cells, errors)]. Flushed, so it is on disk before the commit."""
        if self.path is None or not rows:
            return
        if self.handle is None:
            self._open("a" if self.path.exists() else "w")
        for line, cells, errors in rows:
            self.writer.writerow([*cells[:len(self.header)], line, format_errors(errors)])
        self.handle.flush()

    def close(self):
        if self.handle is not None:
            self.handle.close()
            self.handle = None


class _KeySet:
    """Keys (emails, phones) a dry run would have created in earlier batches: 8 bytes
    each in a sorted array, so that a dry run of a large file stays small too."""

    MERGE_EVERY = 50_000

    def __init__(self):
        self.sorted = array("q")
        self.recent = set()

    @staticmethod
    def _digest(key):
        return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True)

    def add(self, key):
        self.recent.add(self._digest(key))
        if len(self.recent) >= self.MERGE_EVERY:
            self.sorted = array("q", sorted([*self.sorted, *self.recent]))
            self.recent = set()

    def __contains__(self, key):
        digest = self._digest(key)
        if digest in self.recent:
            return True
        position = bisect.bisect_left(self.sorted, digest)
        return position < len(self.sorted) and self.sorted[position] == digest


# --- Importing ---------------------------------------------------------------------------


def can_start_processes():
    """Whether this process may fork cleaning processes: the platform can fork, the
    process is not daemonic (a Celery prefork pool runs tasks in daemonic children, and
    multiprocessing refuses them children of their own) and this is the main thread
    (forking from a thread of a threaded process, e.g. a Celery threads pool, is not
    safe)."""
    return (
        "fork" in multiprocessing.get_all_start_methods()
        and not multiprocessing.current_process().daemon
        and threading.current_thread() is threading.main_thread()
    )


def default_workers():
    """Processes that clean rows beside the one that writes: one per core (up to 4),
    when there are several cores and this process may start them (see
    ``can_start_processes``); else 0, the rows are cleaned in this process."""
    cores = os.cpu_count() or 1
    return min(cores, 4) if cores > 1 and can_start_processes() else 0


def import_csv(*, path, form, columns=None, overrides=None, empty_values=(), dry_run=False,
               batch_size=DEFAULT_BATCH_SIZE, file_name=None, rejected_path=None, start_after_line=0,
               on_batch=None, csv_file=None, workers=None):
    """Import the leads of the CSV file at ``path`` into ``form`` (and its source).

    ``columns`` is the field of each column (see ``resolve_columns``), or the automatic
    mapping with ``overrides``. ``empty_values`` are read as empty. The rejected rows
    go to ``rejected_path`` (default ``<name>.rejected.csv`` beside the file) with
    their line number and errors. A dry run reads, validates and looks the leads up,
    and writes nothing.

    Rows are cleaned (and new leads scored) by ``workers`` forked processes (default:
    ``default_workers()``; 0: in this process) while this one writes; at most a few
    batches are in flight, so memory does not grow with the file. Where processes
    cannot be started (a daemonic process, a thread), the rows are cleaned in this
    process whatever ``workers`` says.

    ``on_batch(batch, report, csv_file)`` is called inside each batch's transaction,
    so what it writes commits with the batch. Returns an ``ImportReport``.
    """
    csv_file = csv_file or CsvFile(path)
    header = csv_file.header
    columns = check_columns(header, columns, form) if columns is not None else resolve_columns(
        header, form, overrides)
    file_name = file_name or Path(path).name
    report = ImportReport(file_name=file_name, dry_run=dry_run, bytes_total=csv_file.size)
    writer = _RejectedWriter(
        None if dry_run else Path(rejected_path or rejected_path_for(path)), header,
        delimiter=csv_file.delimiter, resume_after=start_after_line,
    )
    chunks = _chunked(_payloads(csv_file.rows(start_after_line=start_after_line), header, columns), batch_size,
                      csv_file)
    importer = _BatchImporter(form=form, file_name=file_name, dry_run=dry_run)
    cleaner = _Cleaner(form, empty_values, workers=default_workers() if workers is None else workers,
                       file_name=file_name,
                       render=RENDER_IN_WORKERS and not dry_run and _can_copy())
    try:
        for chunk, prepared in cleaner.prepare(chunks):
            batch = importer.run(chunk, prepared, writer, on_batch=lambda batch, chunk=chunk: (
                on_batch(batch, report, chunk) if on_batch else None))
            report.per_row_batches += importer.last_batch_per_row
            report.bytes_done = chunk.bytes_done
            report.add(batch)
    finally:
        writer.close()
    report.bytes_done = csv_file.size
    report.elapsed = time.monotonic() - report.started
    report.rejected_path = str(writer.path) if writer.path and writer.written else ""
    return report


def _payloads(rows, header, columns):
    """``(line, cells, payload)`` for each row; a row whose every cell is empty is
    ``(line, cells, None)`` (a blank spreadsheet line, skipped)."""
    mapped = [(position, key) for position, key in enumerate(columns) if key]
    width = len(header)
    for line, cells in rows:
        if not any(cell.strip() for cell in cells):
            yield line, cells, None
            continue
        if len(cells) < width:
            cells = cells + [""] * (width - len(cells))
        if any("\x00" in cell for cell in cells):  # PostgreSQL keeps no NUL in text
            cells = [cell.replace("\x00", "") for cell in cells]
        yield line, cells, {key: cells[position] for position, key in mapped}


@dataclass
class _Chunk:
    rows: list  # [(line, cells, payload)]
    bytes_done: int  # how far into the file the reading was when this chunk was complete
    now: object = None  # the time its rows were handed to cleaning: the batch's timestamps


def _chunked(rows, size, csv_file):
    while True:
        rows_ = list(islice(rows, size))
        if not rows_:
            return
        yield _Chunk(rows_, csv_file.bytes_done)


# -- Cleaning (in worker processes) ----------------------------------------------------------------


@dataclass
class _CleanContext:
    """What cleaning and scoring one row needs, and nothing from the database, so that
    a forked worker process never touches the parent's connection."""

    clean_kwargs: dict
    facts: dict  # source_id, source slug, form_id, form slug
    rules: object = None  # the active scoring.engine.Ruleset, or None
    now: object = None
    render: object = None  # a _RenderContext: also write each row's COPY lines as a new lead


@dataclass
class _RenderContext:
    """What the COPY lines of a row's new lead, its events and its consent need (see
    ``_render_new``): the batch's writer only prefixes the lead's id."""

    ruleset_id: object  # the active ruleset's id, or None
    ruleset_version: object
    reason_ids: dict  # reason slug -> id
    form_slug: str
    file_name: str
    consent: tuple  # (form id, consent text, consent version)


# Each row's COPY lines are written by the cleaning processes (tests turn it off to
# compare with the lines the writer builds itself).
RENDER_IN_WORKERS = True


class _Cleaner:
    """Cleans chunks of rows, in order, in worker processes or in this one."""

    def __init__(self, form, empty_values, *, workers, file_name="", render=False):
        from django.conf import settings

        # The arguments ``services.clean_for_form`` passes (a test keeps them equal).
        self.clean_kwargs = dict(
            accepted=form.get_accepted_fields(), required=form.required_fields, standard=Form.STANDARD_FIELDS,
            default_interest=form.default_interest, consent_required=form.consent_required,
            honeypot=form.honeypot_field, phone_region=settings.FUNIL_DEFAULT_PHONE_REGION,
            empty_values=tuple(empty_values),
        )
        self.facts = {"source_id": form.source_id, "source": _Slug(form.source.slug), "form_id": form.pk,
                      "form": _Slug(form.slug)}
        self.workers = workers
        self.form = form
        self.file_name = file_name
        self.render = render

    def _context(self):
        from scoring import services as scoring

        active = scoring.active_ruleset()
        render = None
        if self.render:
            render = _RenderContext(
                ruleset_id=active[0].pk if active else None, ruleset_version=active[0].version if active else None,
                reason_ids=dict(scoring.reason_ids_cached()) if active else {}, form_slug=self.form.slug,
                file_name=self.file_name,
                consent=(self.form.pk, self.form.consent_text, self.form.consent_version),
            )
        return _CleanContext(self.clean_kwargs, self.facts, rules=active[1] if active else None, now=timezone.now(),
                             render=render)

    def _start_pool(self):
        """The pool of cleaning processes, started; None where they cannot be started
        (the rows are then cleaned in this process)."""
        if not self.workers:
            return None
        if not can_start_processes():
            logger.info("Import: rows cleaned in this process (it cannot start cleaning processes here: "
                        "a daemonic process or a thread)")
            return None
        pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("fork"))
        try:
            pool.submit(int).result()  # the processes start now, before any row is handed to them
        except (AssertionError, OSError, BrokenProcessPool) as exc:
            logger.warning("Import: could not start %s cleaning processes (%s: %s); rows cleaned in this process",
                           self.workers, exc.__class__.__name__, exc)
            pool.shutdown(wait=False, cancel_futures=True)
            return None
        return pool

    def prepare(self, chunks):
        """Yield ``(chunk, prepared rows)``, keeping at most a few chunks in flight."""
        pool = self._start_pool()
        if pool is None:
            for chunk in chunks:
                context = self._context()
                chunk.now = context.now
                yield chunk, _prepare_rows([(line, payload) for line, _cells, payload in chunk.rows], context)
            return
        pending = deque()
        try:
            for chunk in chunks:
                rows = [(line, payload) for line, _cells, payload in chunk.rows]
                context = self._context()
                chunk.now = context.now
                pending.append((chunk, pool.submit(_prepare_rows, rows, context)))
                if len(pending) > self.workers:
                    chunk, future = pending.popleft()
                    yield chunk, future.result()
            while pending:
                chunk, future = pending.popleft()
                yield chunk, future.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


class _Slug:
    __slots__ = ("slug",)

    def __init__(self, slug):
        self.slug = slug


def _prepare_rows(rows, context):
    """Clean each row exactly as the endpoint does and, for valid rows, the verdict the
    active rules would give the row as a new lead (``scoring.services.score_new_lead``:
    the row's own facts, this submission as its only engagement). Pure: no database.

    Returns one tuple per row: ``(line, fields, attributes, consent, errors, verdict,
    rendered)``; ``fields`` is None for a blank row, ``verdict`` None without active
    rules or when the row is invalid, ``rendered`` the row's COPY lines as a new lead
    (``_render_new``) when ``context.render`` asks for them, else None.
    """
    from scoring import engine
    from scoring.services import lead_facts

    out = []
    for line, payload in rows:
        if payload is None:
            out.append((line, None, None, False, None, None, None))
            continue
        clean = clean_lead_data(payload, **context.clean_kwargs)
        if not clean.is_valid:
            out.append((line, {}, {}, False, clean.errors, None, None))
            continue
        verdict = None
        lead = None
        if context.rules is not None or context.render is not None:
            lead = _NewLead.build(clean.fields, clean.attributes, context.facts, context.now)
        if context.rules is not None:
            found = engine.evaluate(context.rules, lead_facts(lead), [("captured", context.now)], now=context.now)
            verdict = (found.score, found.temperature, found.status, found.reason, found.explanation)
        rendered = None
        if context.render is not None:
            rendered = _render_new(lead, line, clean.consent, verdict, context)
            if verdict is not None:
                # The explanation is in the rendered event: not sent back, the largest
                # part of a row's result (the writer applies only the rest).
                verdict = (*verdict[:4], None)
        out.append((line, clean.fields, clean.attributes, clean.consent, None, verdict, rendered))
    return out


class _Rendered(NamedTuple):
    """A row's COPY lines as a new lead, each without its leading id or lead id. A
    named tuple: it crosses from the cleaning process by pickle, cheaply."""

    ruleset_id: object  # the ruleset its verdict came from (the writer checks it is still active)
    lead: str
    events: list
    consent: object  # str, or None without consent


def _render_new(lead, line, consent, verdict, context):
    """The lead of ``_NewLead.build`` with ``verdict`` applied, its events and its
    consent, as ``_BatchImporter._plan`` and ``_write`` make them, all stamped
    ``context.now``."""
    render, now = context.render, context.now
    lead.created_at = lead.updated_at = now
    data = _import_context(render.form_slug, render.file_name, line, render.consent[2] if consent else None)
    events = [_copy_line((LeadEvent.Kind.CAPTURED, None, "", "", None, "", data, now))]
    if verdict is not None and render.ruleset_id is not None:
        _apply_verdict(lead, verdict, render.reason_ids, now)
        events.append(_copy_line((LeadEvent.Kind.STATUS_CHANGED, None, LeadStatus.NEW, lead.status, lead.reason_id,
                                  "", _status_data(render.ruleset_id, render.ruleset_version, verdict), now)))
    consent_line = None
    if consent:
        form_id, text, version = render.consent
        consent_line = _copy_line((Consent.Action.GRANTED, form_id, None, text, version, None,
                                   _consent_note(render.file_name, line), now))
    return _Rendered(render.ruleset_id, _copy_line(lead.values()), events, consent_line)


def _apply_verdict(lead, verdict, reason_ids, now):
    """Set a row's ``verdict`` tuple on its new lead, as capture does."""
    from scoring.services import new_lead_verdict_set

    score, temperature, status, reason, _explanation = verdict
    new_lead_verdict_set(lead, score=score, temperature=temperature, status=status, reason=reason,
                         reason_ids=reason_ids, now=now)


def _status_data(ruleset_id, version, verdict):
    """The data of a new lead's status event, as capture writes it."""
    score, temperature, _status, _reason, explanation = verdict
    return {"set_by": "rules", "ruleset": ruleset_id, "version": version, "score": score,
            "temperature": temperature, "explanation": explanation}


def _import_context(form_slug, file_name, line, consent_version):
    """What a row's *captured* or *resubmitted* event says of where it came from."""
    return {"form": form_slug, "import": file_name, "line": line,
            **({"consent": consent_version} if consent_version is not None else {})}


def _consent_note(file_name, line):
    return f"import {file_name}, line {line}"[:255]


class _NewLead:
    """A lead about to be inserted: every column at its default, then the row's values.
    A plain object: building a Django model instance costs more than the rest of the
    row's work."""

    pk = None
    rendered = None  # its COPY line without the id, while nothing has changed it since

    @classmethod
    def build(cls, fields, attributes, facts, now):
        lead = cls()
        lead.__dict__.update(_lead_defaults())
        lead.__dict__.update(facts)
        lead.__dict__.update((name, value) for name, value in fields.items() if name in services.CONTACT_FIELDS)
        lead.attributes = dict(attributes)
        lead.last_activity_at = now
        return lead

    def values(self):
        return [getattr(self, name) for name in _lead_columns()]


@functools.cache
def _lead_columns():
    return tuple(field.attname for field in Lead._meta.concrete_fields if not field.primary_key)


@functools.cache
def _lead_defaults_cached():
    return {field.attname: field.get_default() for field in Lead._meta.concrete_fields if not field.primary_key}


def _lead_defaults():
    defaults = dict(_lead_defaults_cached())
    defaults["attributes"] = {}
    return defaults


# -- Writing (in this process) --------------------------------------------------------------------


class _BatchImporter:
    """Turns a batch of cleaned rows into leads and timeline events, set-based."""

    def __init__(self, *, form, file_name, dry_run):
        self.form = form
        self.file_name = file_name
        self.dry_run = dry_run
        self.dry_run_keys = _KeySet() if dry_run else None
        self.last_batch_per_row = 0
        self.facts = {"source_id": form.source_id, "source": form.source, "form_id": form.pk, "form": form}

    def run(self, chunk, prepared, writer, *, on_batch):
        """Write (or, in a dry run, only plan) one batch. Returns a BatchResult."""
        result = BatchResult(rows=len(prepared), last_line=prepared[-1][0])
        valid, rejected = [], []
        for (line, cells, _payload), row in zip(chunk.rows, prepared, strict=True):
            fields, errors = row[1], row[4]
            if fields is None:
                result.skipped += 1
            elif errors:
                rejected.append((line, cells, errors))
            else:
                valid.append(row)
        result.rejected = len(rejected)
        result.rejected_rows = [(line, format_errors(errors))
                                for line, _cells, errors in rejected[:REJECTED_SAMPLE_SIZE]]
        self.last_batch_per_row = 0
        if self.dry_run:
            plan = self._plan(valid, now=timezone.now(), locking=False)
            result.created, result.updated = len(plan.new_leads), plan.updated
            on_batch(result)
            return result
        writer.write(rejected)
        try:
            with transaction.atomic():
                result.created, result.updated = self._write(valid, now=chunk.now or timezone.now())
                on_batch(result)
        except (IntegrityError, OperationalError) as exc:
            if isinstance(exc, OperationalError) and not is_write_conflict(exc):
                raise
            # Someone created one of these leads meanwhile (or two writers crossed):
            # redo the batch one row at a time, the way the endpoint does.
            logger.info("Import of %s: batch ending at line %s redone row by row (%s)",
                        self.file_name, result.last_line, exc)
            self.last_batch_per_row = 1
            with transaction.atomic():
                result.created, result.updated = self._write_one_by_one(valid)
                on_batch(result)
        return result

    # -- Planning: who is new, who is merged, and how ------------------------------------

    def _context(self, line, consent):
        return _import_context(self.form.slug, self.file_name, line, self.form.consent_version if consent else None)

    def _lookup(self, valid, *, locking):
        """The existing leads of the batch, by email and by phone (lowest id first, as
        ``services.lead_capture`` finds them), locked unless ``locking`` is False."""
        emails = {fields["email"] for _line, fields, *_rest in valid if fields.get("email")}
        phones = {fields["phone"] for _line, fields, *_rest in valid if not fields.get("email") and fields.get("phone")}
        queryset = Lead.objects.select_related("source", "form").order_by("id")
        if locking:
            queryset = queryset.select_for_update(of=("self",))
        by_email, by_phone = {}, {}
        for part in _chunks(sorted(emails)):
            for lead in queryset.filter(email__in=part):
                by_email[lead.email] = lead
        for part in _chunks(sorted(phones)):
            for lead in queryset.filter(phone__in=part):
                lead = by_email.get(lead.email, lead) if lead.email else lead
                by_phone.setdefault(lead.phone, lead)
        return by_email, by_phone

    def _plan(self, valid, *, now, locking, rendered_lines=False):
        """Walk the batch in file order, as the endpoint would see the rows one after
        the other: which rows create a lead, which merge into one, and the events.
        With ``rendered_lines``, a new lead whose row came with its COPY lines (from
        the same active ruleset) takes them instead of events to build."""
        plan = _Plan()
        by_email, by_phone = self._lookup(valid, locking=locking)
        scoring = None if self.dry_run else _Scoring.for_batch(
            {lead.pk: lead for lead in [*by_email.values(), *by_phone.values()]}, now)
        active_id = scoring.active[0].pk if scoring is not None and scoring.active else None
        for line, clean_fields, attributes, consent, _errors, verdict, rendered in valid:
            fields = {name: value for name, value in clean_fields.items() if name in services.CONTACT_FIELDS}
            email, phone = fields.get("email"), fields.get("phone")
            lead = by_email.get(email) if email else by_phone.get(phone) if phone else None
            if lead is None and self.dry_run and (
                (email and f"e:{email}" in self.dry_run_keys)
                or (not email and phone and f"p:{phone}" in self.dry_run_keys)
            ):
                plan.updated += 1  # created by an earlier batch of this dry run
                continue
            context = self._context(line, consent)
            if lead is None:
                lead = _NewLead.build(fields, attributes, self.facts, now)
                plan.new_leads.append(lead)
                if email:
                    by_email[email] = lead
                if phone:
                    by_phone.setdefault(phone, lead)
                if self.dry_run:
                    if email:
                        self.dry_run_keys.add(f"e:{email}")
                    if phone:
                        self.dry_run_keys.add(f"p:{phone}")
                    continue
                if rendered is not None:
                    if rendered_lines and rendered.ruleset_id == active_id:
                        scoring.score_new(lead, verdict, event=False)
                        lead.rendered = rendered.lead
                        plan.rendered_events.append((lead, rendered.events))
                        if consent:
                            plan.rendered_consents.append((lead, [rendered.consent]))
                        continue
                    # Not written from its lines (other rules were activated since it was
                    # cleaned): judged here by the active rules, explanation included.
                    verdict = scoring.evaluate_new(lead)
                plan.events.append((lead, LeadEvent.Kind.CAPTURED, "", "", None, context))
                plan.events.extend(scoring.score_new(lead, verdict))
            else:
                plan.updated += 1
                filled = [name for name, value in fields.items() if name in services.MERGEABLE_FIELDS
                          and services._is_empty(getattr(lead, name)) and not services._is_empty(value)]
                for name in filled:
                    setattr(lead, name, fields[name])
                new_attributes = {key: value for key, value in attributes.items() if key not in lead.attributes}
                also_changed = []
                if new_attributes:
                    lead.attributes = {**lead.attributes, **new_attributes}
                    also_changed.append("attributes")
                if lead.source_id is None:
                    lead.source = self.form.source
                    also_changed.append("source")
                if lead.form_id is None:
                    lead.form = self.form
                    also_changed.append("form")
                if "phone" in filled:
                    _offer_phone(by_phone, phone, lead)
                if self.dry_run:
                    continue
                if lead.pk is None:
                    lead.rendered = None  # new in this batch: its line is built again
                lead.last_activity_at = now
                if lead.pk is not None:
                    plan.merged[lead.pk] = lead
                    plan.changed_fields.update(filled, also_changed)
                plan.events.append((lead, LeadEvent.Kind.RESUBMITTED, "", "", None,
                                    {**context, "filled": filled + sorted(new_attributes)}))
                plan.events.extend(scoring.requalify(lead, plan.changed_fields))
            if consent and not self.dry_run:
                plan.consents.append((lead, _consent_note(self.file_name, line)))
        return plan

    # -- Writing ---------------------------------------------------------------------------

    def _write(self, valid, *, now):
        fast = _can_copy()
        plan = self._plan(valid, now=now, locking=True, rendered_lines=fast)
        for lead in plan.new_leads:
            lead.created_at = lead.updated_at = now
        for lead in plan.merged.values():
            lead.updated_at = now
        changed = sorted({*plan.changed_fields, "last_activity_at", "updated_at"})
        if fast:
            _insert_leads_copy(plan.new_leads)
            _update_leads_values(list(plan.merged.values()), changed)
        else:
            _insert_leads_orm(plan.new_leads)
            if plan.merged:
                Lead.objects.bulk_update(list(plan.merged.values()), changed)
        def event_row(lead, kind, from_status, to_status, reason_id, data):
            return (lead.pk, kind, None, from_status, to_status, reason_id, "", data, now)

        def consent_row(lead, note):
            return (lead.pk, Consent.Action.GRANTED, self.form.pk, None, self.form.consent_text,
                    self.form.consent_version, None, note, now)

        if fast:
            _copy_lines(LeadEvent, EVENT_COLUMNS, itertools.chain(
                _prefixed(plan.rendered_events), (_copy_line(event_row(*event)) for event in plan.events)))
            _copy_lines(Consent, CONSENT_COLUMNS, itertools.chain(
                _prefixed(plan.rendered_consents), (_copy_line(consent_row(*consent)) for consent in plan.consents)))
        else:
            event_rows = [event_row(*event) for event in plan.events]
            consent_rows = [consent_row(*consent) for consent in plan.consents]
            LeadEvent.objects.bulk_create([LeadEvent(**dict(zip(EVENT_COLUMNS, row, strict=True)))
                                           for row in event_rows])
            Consent.objects.bulk_create([Consent(**dict(zip(CONSENT_COLUMNS, row, strict=True)))
                                         for row in consent_rows])
        self._webhooks(plan)
        return len(plan.new_leads), plan.updated

    def _webhooks(self, plan):
        """The outbound webhooks the endpoint would send for these rows: ``lead.created``
        and the new lead's status, and the status a merged lead moved to; written with
        the batch, sent after its commit. Nothing to read when no endpoint is active."""
        from . import webhooks

        if not webhooks.active_endpoints():
            return
        new_ids = [lead.pk for lead in plan.new_leads]
        moved = {}
        for lead, kind, _from_status, to_status, _reason, _data in plan.events:
            if kind in (LeadEvent.Kind.STATUS_CHANGED, LeadEvent.Kind.REQUALIFIED) and to_status:
                moved[lead.pk] = to_status
        leads = Lead.objects.select_related("source", "form", "reason").in_bulk([*new_ids, *moved])
        pairs = []
        for pk in new_ids:
            pairs.append((leads[pk], "lead.created"))
            if leads[pk].status in webhooks.STATUS_EVENTS:
                pairs.append((leads[pk], webhooks.STATUS_EVENTS[leads[pk].status]))
        new = set(new_ids)
        for pk, status in moved.items():
            if pk not in new and status in webhooks.STATUS_EVENTS:
                pairs.append((leads[pk], webhooks.STATUS_EVENTS[status]))
        webhooks.webhook_events_record_many(pairs)

    def _write_one_by_one(self, valid):
        """The slow, always-correct path: each row through ``services.lead_capture``."""
        created = updated = 0
        for line, fields, attributes, consent, _errors, _verdict, _rendered in valid:
            clean = CleanLead(fields=dict(fields), attributes=dict(attributes), consent=consent)
            lead, was_created = services.lead_capture(clean=clean, form=self.form)
            kind = LeadEvent.Kind.CAPTURED if was_created else LeadEvent.Kind.RESUBMITTED
            event = LeadEvent.objects.filter(lead=lead, kind=kind).order_by("-id").first()
            if event is not None:
                LeadEvent.objects.filter(pk=event.pk).update(data={**event.data, **self._context(line, consent)})
            created += was_created
            updated += not was_created
        return created, updated


@dataclass
class _Plan:
    new_leads: list = field(default_factory=list)  # _NewLead, in file order
    merged: dict = field(default_factory=dict)  # existing leads changed: pk -> Lead
    changed_fields: set = field(default_factory=set)
    updated: int = 0  # rows merged into a lead
    events: list = field(default_factory=list)  # (lead, kind, from_status, to_status, reason_id, data)
    consents: list = field(default_factory=list)  # (lead, note)
    # New leads' rows written by the cleaning processes: (lead, [COPY lines without the lead's id]).
    # Each is its lead's first row, so writing them before ``events`` keeps every lead's order.
    rendered_events: list = field(default_factory=list)
    rendered_consents: list = field(default_factory=list)


EVENT_COLUMNS = ("lead_id", "kind", "actor_id", "from_status", "to_status", "reason_id", "note", "data",
                 "created_at")
CONSENT_COLUMNS = ("lead_id", "action", "form_id", "submission_id", "text", "version", "ip", "note", "created_at")


def _insert_leads_orm(new_leads):
    if not new_leads:
        return
    columns = _lead_columns()
    leads = [Lead(**dict(zip(columns, lead.values(), strict=True))) for lead in new_leads]
    Lead.objects.bulk_create(leads)
    for new, lead in zip(new_leads, leads, strict=True):
        new.pk = new.id = lead.pk


def _insert_leads_copy(new_leads):
    """PostgreSQL: take the ids from the sequence, then COPY the rows in."""
    if not new_leads:
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
                       [Lead._meta.db_table, len(new_leads)])
        ids = sorted(row[0] for row in cursor.fetchall())
    for lead, pk in zip(new_leads, ids, strict=True):
        lead.pk = lead.id = pk
    _copy_lines(Lead, ("id", *_lead_columns()), (
        f"{lead.pk}\t{lead.rendered}" if lead.rendered is not None else _copy_line([lead.pk, *lead.values()])
        for lead in new_leads))


def _update_leads_values(leads, changed):
    """PostgreSQL: one UPDATE … FROM (VALUES …) for the merged leads, only the changed columns."""
    if not leads:
        return
    fields = [Lead._meta.get_field(name) for name in changed]
    quote = connection.ops.quote_name
    casts = ", ".join(["%s::bigint", *(f"%s::{field.db_type(connection)}" for field in fields)])
    params = []
    for lead in leads:
        params.append(lead.pk)
        params.extend(field.get_db_prep_save(getattr(lead, field.attname), connection) for field in fields)
    assignments = ", ".join(f"{quote(field.column)} = v.{quote(field.column)}" for field in fields)
    names = ", ".join(["id", *(quote(field.column) for field in fields)])
    rows = ", ".join([f"({casts})"] * len(leads))
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {quote(Lead._meta.db_table)} AS l SET {assignments} FROM (VALUES {rows}) AS v({names}) "
            f"WHERE l.id = v.id", params,
        )


def _can_copy():
    """Whether this connection writes with COPY (PostgreSQL through psycopg2)."""
    if connection.vendor != "postgresql":
        return False
    connection.ensure_connection()
    return hasattr(connection.connection.cursor(), "copy_expert")


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_JSON_ENCODE = json.JSONEncoder(ensure_ascii=False).encode


def _copy_text(value):
    """``value`` in COPY's text format, not yet escaped (``_copy_line`` escapes)."""
    if value is None:
        return "\\N"
    kind = type(value)
    if kind is str:
        return value
    if kind is bool:
        return "t" if value else "f"
    if kind is dict or kind is list:
        return _JSON_ENCODE(value) if value else ("{}" if kind is dict else "[]")
    if kind is datetime.datetime:
        return _isoformat(value)  # a batch's rows share a few timestamps (equal instants: one timestamptz)
    return str(value)


_isoformat = functools.lru_cache(maxsize=16)(datetime.datetime.isoformat)


def _copy_line(row):
    """One row in COPY's text format. Most rows hold no tab, line break or backslash:
    they are joined once and checked once; only the others are escaped value by value."""
    texts = ["\\N" if value is None else value if type(value) is str else _copy_text(value) for value in row]
    line = "\t".join(texts)
    # The only backslashes of a clean line are those of its NULLs ("\N").
    if (line.count("\t") == len(texts) - 1 and line.count("\\") == row.count(None)
            and "\n" not in line and "\r" not in line):
        return line
    return "\t".join(
        text if value is None else text.translate(_COPY_ESCAPES) for value, text in zip(row, texts, strict=True)
    )


def _prefixed(rendered):
    """COPY lines written by a cleaning process, ``[(lead, [line])]``, with each
    lead's id in front."""
    for lead, lines in rendered:
        prefix = f"{lead.pk}\t"
        for line in lines:
            yield prefix + line


def _copy_lines(model, columns, lines):
    """COPY ``lines`` (rows already in COPY's text format) into ``model``'s table."""
    buffer = io.StringIO()
    for line in lines:
        buffer.write(line)
        buffer.write("\n")
    if not buffer.tell():
        return
    buffer.seek(0)
    quote = connection.ops.quote_name
    sql = f"COPY {quote(model._meta.db_table)} ({', '.join(quote(name) for name in columns)}) FROM STDIN"
    with connection.cursor() as cursor, connection.wrap_database_errors:
        cursor.cursor.copy_expert(sql, buffer)


def _offer_phone(by_phone, phone, lead):
    """A merge gave ``lead`` this phone: later phone-only rows find the lead with that
    phone and the lowest id, as the endpoint's look-up does."""
    current = by_phone.get(phone)
    if current is None or (current.pk is None and lead.pk is not None) or (
        current.pk is not None and lead.pk is not None and lead.pk < current.pk
    ):
        by_phone[phone] = lead


def _chunks(values, size=None):
    size = size or (900 if connection.vendor == "sqlite" else 5000)
    for start in range(0, len(values), size):
        yield values[start:start + size]


class _Scoring:
    """The active rules applied as the endpoint applies them: a new lead gets the
    verdict computed for its row (``_prepare_rows``, as ``score_new_lead`` does); a
    merged lead is re-evaluated after each merge with the decision rule of
    ``scoring.services.lead_qualify`` (the rules move only the statuses they own), in
    memory, and written with the batch."""

    def __init__(self, active, engagement, now):
        self.active = active
        self.engagement = engagement  # id(lead) -> [(kind, created_at)]
        self.now = now

    @classmethod
    def for_batch(cls, existing, now):
        from scoring import engine
        from scoring import services as scoring

        active = scoring.active_ruleset()
        engagement = {}
        if active is not None and existing and scoring.uses_engagement(active[1]):
            kinds = [kind for kinds in engine.ENGAGEMENT_EVENT_KINDS.values() for kind in kinds]
            for part in _chunks(sorted(existing)):
                rows = LeadEvent.objects.filter(lead_id__in=part, kind__in=kinds).values_list(
                    "lead_id", "kind", "created_at")
                for lead_id, kind, created_at in rows:
                    engagement.setdefault(id(existing[lead_id]), []).append((kind, created_at))
        return cls(active, engagement, now)

    def evaluate_new(self, lead):
        """The verdict of the active rules on a new lead (as ``_prepare_rows``), or None."""
        from scoring import engine
        from scoring import services as scoring

        if self.active is None:
            return None
        found = engine.evaluate(self.active[1], scoring.lead_facts(lead), [("captured", self.now)], now=self.now)
        return (found.score, found.temperature, found.status, found.reason, found.explanation)

    def score_new(self, lead, verdict, *, event=True):
        """Set the row's verdict on the new lead (as ``score_new_lead``); its event
        (none with ``event=False``: a cleaning process wrote it)."""
        from scoring import services as scoring

        if self.active is None or verdict is None:
            return []
        ruleset, _rules = self.active
        _apply_verdict(lead, verdict, scoring.reason_ids_cached(), self.now)
        self.engagement[id(lead)] = [("captured", self.now)]
        if not event:
            return []
        return [(lead, LeadEvent.Kind.STATUS_CHANGED, LeadStatus.NEW, lead.status, lead.reason_id,
                 _status_data(ruleset.pk, ruleset.version, verdict))]

    def requalify(self, lead, changed_fields):
        """After a merge into ``lead``: its new verdict, applied in memory; the events."""
        from scoring import engine
        from scoring import services as scoring

        if self.active is None:
            return []
        ruleset, rules = self.active
        events = self.engagement.setdefault(id(lead), [])
        events.append(("resubmitted", self.now))
        verdict = engine.evaluate(rules, scoring.lead_facts(lead), events, now=self.now)
        reason = scoring.reason_ids_cached().get(verdict.reason) if verdict.reason else None
        rules_own = lead.status_set_by == StatusSetBy.RULES and lead.status != LeadStatus.CONVERTED
        changed = {}
        if (lead.score, lead.temperature) != (verdict.score, verdict.temperature):
            changed.update(score=verdict.score, temperature=verdict.temperature)
        old_status = lead.status
        if rules_own and (lead.status, lead.reason_id) != (verdict.status, reason):
            changed.update(status=verdict.status, reason_id=reason, reason_note="")
            if verdict.status != old_status:
                changed[scoring.STATUS_STAMP[verdict.status]] = self.now
            if verdict.status != LeadStatus.DISQUALIFIED:
                changed["requalify_at"] = None
        for name, value in changed.items():
            setattr(lead, name, value)
        changed_fields.update(name.removesuffix("_id") for name in changed)
        out = [(lead, LeadEvent.Kind.SCORED, "", "", None, {
            "ruleset": ruleset.pk, "version": ruleset.version, "score": verdict.score,
            "temperature": verdict.temperature, "explanation": verdict.explanation,
        })]
        if "status" in changed and changed["status"] != old_status:
            out.append((lead, LeadEvent.Kind.STATUS_CHANGED, old_status, verdict.status, reason,
                        {"set_by": "rules", "ruleset": ruleset.pk, "version": ruleset.version}))
        return out


# --- Admin jobs ------------------------------------------------------------------------------

IMPORTS_DIR = "imports"


def imports_dir():
    from django.conf import settings

    return Path(settings.DATA_DIR) / IMPORTS_DIR


def import_job_create(*, form, upload, created_by=None, empty_values=()):
    """Store an uploaded file under ``DATA_DIR/imports/`` and create its job, waiting
    for the column mapping. The header is read (and the file's format detected) now."""
    import uuid

    folder = imports_dir() / uuid.uuid4().hex
    folder.mkdir(parents=True, exist_ok=True)
    name = _safe_file_name(getattr(upload, "name", "") or "leads.csv")
    path = folder / name
    with path.open("wb") as out:
        for chunk in upload.chunks():
            out.write(chunk)
    try:
        csv_file = CsvFile(path)
    except ImportFileError:
        path.unlink(missing_ok=True)
        folder.rmdir()
        raise
    return ImportJob.objects.create(
        form=form, created_by=created_by, file_name=name, path=str(path), encoding=csv_file.encoding,
        delimiter=csv_file.delimiter, header=csv_file.header, columns=auto_columns(csv_file.header, form),
        empty_values=list(empty_values), bytes_total=csv_file.size,
    )


def _safe_file_name(name):
    name = Path(name.replace("\\", "/")).name
    name = re.sub(r"[^\w.\- ]", "_", name).strip(" .") or "leads.csv"
    return name[:200]


def import_job_start(*, job, columns):
    """Confirm the mapping and queue the job for a worker (on commit)."""
    columns = check_columns(job.header, columns, job.form)
    updated = ImportJob.objects.filter(pk=job.pk, status=ImportJob.Status.MAPPING).update(
        columns=columns, status=ImportJob.Status.PENDING, heartbeat_at=timezone.now(),  # queued at
    )
    if updated:
        transaction.on_commit(lambda: _enqueue(job.pk))
    job.refresh_from_db()
    return job


def _enqueue(job_id):
    from .tasks import run_import_job

    try:
        run_import_job.delay(job_id)
    except Exception:  # noqa: BLE001 - the job waits in the database; run it with import_leads --job
        logger.warning("Could not enqueue import job %s; run it with: manage.py import_leads --job %s",
                       job_id, job_id)


STALLED_AFTER_SECONDS = 600
# A pending job no worker took after this long lost its message (or no worker runs).
PENDING_GRACE_SECONDS = 120


def import_jobs_sweep(*, now=None):
    """Beat, every minute: queue again the pending jobs no worker took (their message
    was lost) and the running jobs whose worker stopped reporting progress (it died);
    the job itself resumes after its last committed line. Returns the ids queued."""
    from datetime import timedelta

    from django.db.models import Q

    from .tasks import run_import_job

    now = now or timezone.now()
    due = ImportJob.objects.filter(
        Q(status=ImportJob.Status.PENDING, heartbeat_at__lt=now - timedelta(seconds=PENDING_GRACE_SECONDS))
        | Q(status=ImportJob.Status.RUNNING, heartbeat_at__lt=now - timedelta(seconds=STALLED_AFTER_SECONDS))
    ).order_by("id").values_list("id", flat=True)
    queued = []
    for job_id in due:
        try:
            run_import_job.delay(job_id, take_over_stalled=True)
        except Exception:  # noqa: BLE001 - the broker is down: the next sweep tries again
            logger.warning("Could not enqueue import job %s", job_id)
            break
        queued.append(job_id)
    return queued


# Why a job failed, in plain words: stored in ``ImportJob.error`` in English (the msgid),
# followed by a blank line and the technical detail; shown translated by ``job_error``.
JOB_FILE_ERROR = gettext_noop(
    "The file could not be read to the end. Correct it and upload it again; the rows imported before the "
    "problem are kept.")
JOB_UNEXPECTED_ERROR = gettext_noop(
    "The import stopped on an unexpected error. The rows imported before it are kept: retry the import to "
    "continue after them. If it fails again, give the technical details to whoever maintains Funil.")
_JOB_ERRORS = (JOB_FILE_ERROR, JOB_UNEXPECTED_ERROR)


def _job_error_text(exc):
    message = JOB_FILE_ERROR if isinstance(exc, ImportFileError) else JOB_UNEXPECTED_ERROR
    detail = str(exc) if isinstance(exc, ImportFileError) else f"{exc.__class__.__name__}: {exc}"
    return f"{message}\n\n{detail}"[:5000]


def job_error(job):
    """``(message, details)`` of a failed job: the message in the active language, the
    technical details as recorded. An error recorded otherwise (before these messages
    existed) is all details, under the message of an unexpected error."""
    text = job.error or ""
    if not text:
        return "", ""
    for message in _JOB_ERRORS:
        if text.startswith(message):
            return gettext(message), text[len(message):].strip()
    return gettext(JOB_UNEXPECTED_ERROR), text


def import_job_retry(*, job, enqueue=True):
    """Put a failed import job back to pending: it is queued (on commit, and by the
    sweep should that message be lost) and resumes after its last committed line, with
    its counts so far. Returns whether the job had failed (nothing happens otherwise).
    ``enqueue=False``: the caller runs it now (``import_leads --job ID --retry``)."""
    updated = ImportJob.objects.filter(pk=job.pk, status=ImportJob.Status.FAILED).update(
        status=ImportJob.Status.PENDING, error="", worker="", finished_at=None, heartbeat_at=timezone.now(),
    )
    if updated and enqueue:
        transaction.on_commit(lambda: _enqueue(job.pk))
    return bool(updated)


def import_job_run(*, job_id, worker="", batch_size=DEFAULT_BATCH_SIZE, take_over_stalled=False, workers=None):
    """Run a pending import job (or, with ``take_over_stalled``, one whose worker
    stopped reporting progress), resuming after its last committed line. Safe to call
    twice: the job is claimed with a conditional UPDATE. ``workers``: as for
    ``import_csv`` (the Celery task passes 0: a worker's pool is its concurrency)."""
    from datetime import timedelta

    from django.db.models import Q

    now = timezone.now()
    claimable = Q(status=ImportJob.Status.PENDING)
    if take_over_stalled:
        claimable |= Q(status=ImportJob.Status.RUNNING, heartbeat_at__lt=now - timedelta(seconds=STALLED_AFTER_SECONDS))
    claimed = ImportJob.objects.filter(claimable, pk=job_id).update(
        status=ImportJob.Status.RUNNING, started_at=now, heartbeat_at=now, worker=worker[:255], error="",
    )
    job = ImportJob.objects.select_related("form__source").get(pk=job_id)
    if not claimed:
        return job
    sample = list(job.rejected_sample)

    def on_batch(batch, report, chunk):
        sample.extend([line, errors] for line, errors in batch.rejected_rows[:REJECTED_SAMPLE_SIZE - len(sample)])
        ImportJob.objects.filter(pk=job_id).update(
            rows_done=F("rows_done") + batch.rows, created_count=F("created_count") + batch.created,
            updated_count=F("updated_count") + batch.updated, rejected_count=F("rejected_count") + batch.rejected,
            skipped_count=F("skipped_count") + batch.skipped, last_line=batch.last_line,
            bytes_done=chunk.bytes_done, heartbeat_at=timezone.now(), rejected_sample=sample,
        )

    try:
        report = import_csv(
            path=job.path, form=job.form, columns=job.columns, empty_values=job.empty_values,
            batch_size=batch_size, file_name=job.file_name, start_after_line=job.last_line, on_batch=on_batch,
            csv_file=CsvFile(job.path, encoding=job.encoding or None, delimiter=job.delimiter or None),
            workers=workers,
        )
    except Exception as exc:
        if not database_unavailable(exc):
            logger.exception("Import job %s failed", job_id)
            ImportJob.objects.filter(pk=job_id).update(
                status=ImportJob.Status.FAILED, finished_at=timezone.now(), error=_job_error_text(exc),
            )
            raise
        # The database went away or aborted a batch to settle a conflict with another
        # writer: the job is interrupted, not wrong. Pending again, it is queued by the
        # sweep after its grace and resumes after its last committed line.
        logger.exception("Import job %s was interrupted; the sweep resumes it", job_id)
        try:
            ImportJob.objects.filter(pk=job_id, status=ImportJob.Status.RUNNING, worker=worker[:255]).update(
                status=ImportJob.Status.PENDING, heartbeat_at=timezone.now(), worker="")
        except DatabaseError:
            logger.warning("Could not hand import job %s back; the sweep finds its stale heartbeat", job_id)
        raise
    ImportJob.objects.filter(pk=job_id).update(
        status=ImportJob.Status.DONE, finished_at=timezone.now(), bytes_done=job.bytes_total,
        rejected_path=report.rejected_path or (job.rejected_path if job.rejected_count else ""),
    )
    job.refresh_from_db()
    return job
