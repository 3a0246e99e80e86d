"""CSV export of a lead list: ``GET /api/v1/leads/export.csv``.

Takes the lead list's filters and ``ordering`` (``?status=qualified&state=SP`` ...)
and answers every matching lead, one row each after a header row, in UTF-8 with a
byte-order mark so that Excel shows accents right. Needs the same permission as the
list. The rows are streamed from the database in chunks, never held in memory.

``?dialect=spreadsheet`` writes it for a spreadsheet in the request's language
(``Accept-Language``): in pt-BR, ``;`` between cells and a decimal comma in budgets and
deal values, as Excel with Brazilian regional settings expects. The default
(``standard``) is comma-separated with a decimal point, for programs.

Cells a spreadsheet would run as a formula (starting with ``=``, ``+``, ``-``, ``@``)
are prefixed with ``'``, except plain numbers such as an E.164 phone.
"""

import csv
import json
import re
from decimal import Decimal

from django.http import StreamingHttpResponse
from django.utils import timezone

from .. import selectors, spreadsheets

# (header, path in values_list)
COLUMNS = [
    ("id", "id"), ("created_at", "created_at"), ("status", "status"), ("temperature", "temperature"),
    ("score", "score"), ("first_name", "first_name"), ("last_name", "last_name"), ("email", "email"),
    ("phone", "phone"), ("company", "company"), ("job_title", "job_title"), ("company_size", "company_size"),
    ("country", "country"), ("state", "state"), ("city", "city"), ("interest", "interest"), ("budget", "budget"),
    ("budget_currency", "budget_currency"), ("source", "source__slug"), ("form", "form__slug"),
    ("owner", "owner__username"), ("reason", "reason__slug"), ("reason_note", "reason_note"),
    ("deal_value", "deal_value"), ("utm_source", "utm_source"), ("utm_medium", "utm_medium"),
    ("utm_campaign", "utm_campaign"), ("utm_term", "utm_term"), ("utm_content", "utm_content"),
    ("last_activity_at", "last_activity_at"), ("qualified_at", "qualified_at"),
    ("disqualified_at", "disqualified_at"), ("out_of_focus_at", "out_of_focus_at"),
    ("converted_at", "converted_at"), ("requalify_at", "requalify_at"), ("message", "message"),
    ("attributes", "attributes"),
]
BOM = spreadsheets.BOM
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?[0-9][0-9.,]*")


DIALECTS = ("standard", "spreadsheet")


def csv_response(leads, *, filename=None, dialect="standard"):
    """``dialect``: ``standard`` (``,`` and a decimal point) or ``spreadsheet`` (the
    active language's conventions, ``spreadsheets.conventions``)."""
    filename = filename or f"leads-{timezone.localtime():%Y%m%d-%H%M}.csv"
    style = spreadsheets.conventions() if dialect == "spreadsheet" else spreadsheets.STANDARD
    response = StreamingHttpResponse(_lines(leads, style), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _lines(leads, style=spreadsheets.STANDARD):
    buffer = _Echo()
    writer = csv.writer(buffer, delimiter=style.delimiter)
    yield BOM + writer.writerow([header for header, _path in COLUMNS])
    for row in selectors.lead_rows(leads, [path for _header, path in COLUMNS]):
        yield writer.writerow([_cell(value, style) for value in row])


def _cell(value, style=spreadsheets.STANDARD):
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return style.number(str(value))
    if hasattr(value, "tzinfo") and hasattr(value, "hour"):
        return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True) if value else ""
    text = str(value)
    if text.startswith(_FORMULA_START) and not _NUMBER.fullmatch(text):
        return "'" + text
    return text


class _Echo:
    """A file-like object whose write() returns what it was given (csv writes one row)."""

    def write(self, value):
        return value
