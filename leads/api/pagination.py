"""Cursor pagination over a total order: (a sort field, id).

DRF's ``CursorPagination`` keeps only the first ordering field in the cursor and
skips ties with an OFFSET, which grows with the ties (thousands of leads share a
score) and breaks on NULLs. Here the cursor holds the field's value *and* the id of
the last row, and the next page is ``WHERE (field, id) beyond (value, id)``: every
page costs the same, whatever the position, and rows inserted meanwhile neither
repeat nor vanish.
"""

import json

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import F, Q
from django.utils.translation import gettext_lazy as _
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import Cursor, CursorPagination

from .. import filters
from ..models import Lead

BIGINT = 2**63


class KeysetCursorPagination(CursorPagination):
    page_size = 50
    max_page_size = 500
    page_size_query_param = "page_size"
    page_size_query_description = _("Rows per page (at most 500).")
    cursor_query_description = _("The cursor of the page to fetch, from a previous answer's next or previous link.")
    invalid_cursor_message = _("Invalid cursor.")
    # Subclasses say how rows are ordered.
    default_sort = "-id"

    def get_sort(self, request):
        """(field, descending) of this request."""
        return self.default_sort.lstrip("-"), self.default_sort.startswith("-")

    def paginate_queryset(self, queryset, request, view=None):
        self.request = request
        self.base_url = request.build_absolute_uri()
        self.page_size = self.get_page_size(request)
        self.model = queryset.model
        self.field, self.descending = self.get_sort(request)
        self.cursor = self.decode_cursor(request)
        reverse = bool(self.cursor and self.cursor.reverse)
        descending = self.descending != reverse
        queryset = queryset.order_by(*self._order_by(descending))
        if self.cursor is not None:
            value, pk = self._position(self.cursor.position)
            queryset = queryset.filter(self._beyond(value, pk, descending))
        rows = list(queryset[: self.page_size + 1])
        more = len(rows) > self.page_size
        rows = rows[: self.page_size]
        if reverse:
            rows.reverse()
            self.has_next, self.has_previous = True, more
        else:
            self.has_next, self.has_previous = more, self.cursor is not None
        self.page = rows
        return rows

    def get_next_link(self):
        if not self.has_next or not self.page:
            return None
        return self.encode_cursor(Cursor(offset=0, reverse=False, position=self._encode(self.page[-1])))

    def get_previous_link(self):
        if not self.has_previous or not self.page:
            return None
        return self.encode_cursor(Cursor(offset=0, reverse=True, position=self._encode(self.page[0])))

    def decode_cursor(self, request):
        try:
            cursor = super().decode_cursor(request)
        except NotFound as exc:
            raise self._invalid() from exc
        if cursor is not None and (cursor.offset or cursor.position is None):
            raise self._invalid()
        return cursor

    def _invalid(self):
        return ValidationError({self.cursor_query_param: [str(self.invalid_cursor_message)]})

    def _encode(self, row):
        value = getattr(row, self.field)
        return json.dumps([None if value is None else self._model_field().value_to_string(row), row.pk])

    def _position(self, encoded):
        try:
            value, pk = json.loads(encoded)
            if not isinstance(pk, int) or not -BIGINT < pk < BIGINT:
                raise ValueError
            if value is not None:
                if not isinstance(value, str):
                    raise ValueError
                value = self._model_field().to_python(value)
                if isinstance(value, int) and not -BIGINT < value < BIGINT:
                    raise ValueError
        except (ValueError, TypeError, DjangoValidationError) as exc:
            raise self._invalid() from exc
        if value is None and not self._model_field().null:
            raise self._invalid()
        return value, pk

    def _model_field(self):
        return self.model._meta.get_field(self.field)

    def _order_by(self, descending):
        if self.model is Lead:
            return filters.order_by(self.field, descending)
        expression = F(self.field)
        return [expression.desc() if descending else expression.asc(), F("id").desc() if descending else F("id").asc()]

    def _beyond(self, value, pk, descending):
        """The rows after (value, pk) in the order; NULLs come last when descending and
        first when ascending."""
        field, op = self.field, ("lt" if descending else "gt")
        nullable = self._model_field().null
        if value is None:
            after = Q(**{f"{field}__isnull": True, f"id__{op}": pk})
            return after if descending else after | Q(**{f"{field}__isnull": False})
        after = Q(**{f"{field}__{op}": value}) | Q(**{field: value, f"id__{op}": pk})
        if nullable and descending:
            return after | Q(**{f"{field}__isnull": True})
        # The same condition with a plain bound first, which an index on the field can
        # start from: a deep page then costs what the first page costs.
        return Q(**{f"{field}__{op}e": value}) & after


class LeadCursorPagination(KeysetCursorPagination):
    """Leads in the order the ``ordering`` filter chose (default ``-score``), then id."""

    def get_sort(self, request):
        return filters.parse_ordering(request.query_params.get("ordering"))


class EventCursorPagination(KeysetCursorPagination):
    """A timeline, newest first."""

    default_sort = "-created_at"
