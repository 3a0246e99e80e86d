"""The one FilterSet of the lead list, shared by the API, the CSV export, the triage UI
and saved segments, so that a segment means the same thing everywhere.

Query parameters (all optional, all combined with AND):

- ``status``, ``temperature``, ``state``: repeat to match any, ``?status=new&status=qualified``;
- ``owner``: a user id, ``me``, ``unassigned`` or ``me_or_unassigned`` (a rep's inbox);
- ``source``, ``form``, ``reason``: slugs;
- ``interest``: contains, case-insensitive;
- ``created_after`` / ``created_before``: a date (the whole day, in the site's time
  zone, both ends included) or a date and time (ISO 8601);
- ``score_min`` / ``score_max``: inclusive;
- ``q``: every word in the name, email, company or phone (see ``selectors.lead_search``);
- ``ordering``: ``score``, ``created_at`` or ``last_activity_at``, ``-`` for descending;
  ties are broken by id in the same direction. Default ``-score``.
"""

import datetime
import re

import django_filters
from django import forms
from django.db.models import F, Q
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import extend_schema_field

from . import selectors
from .models import Form, Lead, LeadStatus, Reason, Source, Temperature
from .normalize import BRAZIL_STATES

# Public ordering names -> model fields. The list pagination orders the same way.
ORDERING_FIELDS = {"score": "score", "created_at": "created_at", "last_activity_at": "last_activity_at"}
ORDERING_CHOICES = [
    (f"{prefix}{name}", label)
    for name, (ascending, descending) in {
        "score": (_("Score, lowest first"), _("Score, highest first")),
        "created_at": (_("Oldest first"), _("Newest first")),
        "last_activity_at": (_("Least recent activity first"), _("Most recent activity first")),
    }.items()
    for prefix, label in (("", ascending), ("-", descending))
]
DEFAULT_ORDERING = "-score"
INT_MIN, INT_MAX = -(2**31), 2**31 - 1
OWNER_PATTERN = r"^(me|unassigned|me_or_unassigned|[0-9]{1,18})$"


def parse_ordering(value):
    """'-score' -> ('score', True). Unknown or empty: the default order."""
    value = value if value and value.lstrip("-") in ORDERING_FIELDS else DEFAULT_ORDERING
    return ORDERING_FIELDS[value.lstrip("-")], value.startswith("-")


def order_by(field, descending):
    """The ORDER BY of a lead list: the field (NULLs at the end of a descending list,
    so both databases agree), then id in the same direction, so the order is total."""
    nullable = Lead._meta.get_field(field).null
    if descending:
        return [F(field).desc(nulls_last=True) if nullable else F(field).desc(), F("id").desc()]
    return [F(field).asc(nulls_first=True) if nullable else F(field).asc(), F("id").asc()]


class UpperCaseMultipleChoiceField(django_filters.fields.MultipleChoiceField):
    def to_python(self, value):
        return [str(item).strip().upper() for item in super().to_python(value)]


class StateFilter(django_filters.MultipleChoiceFilter):
    """UF codes, any case."""

    field_class = UpperCaseMultipleChoiceField


class DateOrDateTimeField(forms.Field):
    """'2026-03-31' (a date) or '2026-03-31T14:30:00-03:00' (ISO 8601 date and time)."""

    default_error_messages = {
        "invalid": _("Enter a date (2026-03-31) or a date and time (2026-03-31T14:30:00-03:00)."),
    }

    def to_python(self, value):
        value = (value or "").strip()
        if not value:
            return None
        # An unencoded '+' of a UTC offset arrives as a space.
        value = re.sub(r"(T[0-9:.]+) ([0-9]{2}:?[0-9]{2})$", r"\1+\2", value)
        try:
            parsed = parse_date(value) or parse_datetime(value)
        except ValueError:
            parsed = None
        if parsed is None:
            raise forms.ValidationError(self.error_messages["invalid"], code="invalid")
        if isinstance(parsed, datetime.datetime):
            if timezone.is_naive(parsed):
                parsed = timezone.make_aware(parsed)
            try:
                parsed.astimezone(datetime.UTC)
            except OverflowError as exc:
                raise forms.ValidationError(self.error_messages["invalid"], code="invalid") from exc
        return parsed


@extend_schema_field({"type": "string", "description": "A date (YYYY-MM-DD) or an ISO 8601 date and time."})
class CreatedFilter(django_filters.Filter):
    """A bound on ``created_at``. A date stands for the whole day in the site's time zone."""

    field_class = DateOrDateTimeField

    def __init__(self, *args, upper, **kwargs):
        self.upper = upper
        super().__init__(*args, field_name="created_at", **kwargs)

    def filter(self, qs, value):
        if value in (None, ""):
            return qs
        if isinstance(value, datetime.datetime):
            return qs.filter(**{f"created_at__{'lte' if self.upper else 'gte'}": value})
        if self.upper:
            try:
                value += datetime.timedelta(days=1)
            except OverflowError:
                return qs  # "before the end of time"
            return qs.filter(created_at__lt=_start_of(value))
        return qs.filter(created_at__gte=_start_of(value))


def _start_of(day):
    return timezone.make_aware(datetime.datetime.combine(day, datetime.time.min))


MAX_WITHIN_DAYS = 36600


@extend_schema_field({"type": "integer", "minimum": 1, "maximum": MAX_WITHIN_DAYS})
class WithinDaysFilter(django_filters.NumberFilter):
    """Created in the last N days (since this moment N days ago): a rolling window, so a
    saved view (a nurture sequence's segment, say) keeps meaning "recent leads"."""

    field_class = forms.IntegerField

    def __init__(self, *args, **kwargs):
        super().__init__(*args, field_name="created_at", min_value=1, max_value=MAX_WITHIN_DAYS, **kwargs)

    def filter(self, qs, value):
        if value in (None, ""):
            return qs
        return qs.filter(created_at__gte=timezone.now() - datetime.timedelta(days=int(value)))


@extend_schema_field({"type": "integer", "minimum": INT_MIN, "maximum": INT_MAX})
class ScoreFilter(django_filters.NumberFilter):
    field_class = forms.IntegerField

    def __init__(self, *args, **kwargs):
        super().__init__(*args, field_name="score", min_value=INT_MIN, max_value=INT_MAX, **kwargs)


@extend_schema_field({"type": "string", "pattern": OWNER_PATTERN})
class OwnerFilter(django_filters.CharFilter):
    """A user id, ``me`` (the person asking) or ``unassigned``."""

    field_class = forms.RegexField

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("regex", OWNER_PATTERN)
        kwargs.setdefault(
            "error_messages", {"invalid": _("Enter a user id, “me” or “unassigned”.")}
        )
        super().__init__(*args, **kwargs)

    def filter(self, qs, value):
        if not value:
            return qs
        if value == "unassigned":
            return qs.filter(owner__isnull=True)
        if value in ("me", "me_or_unassigned"):
            user = getattr(self.parent.request, "user", None)
            if user is None or not user.is_authenticated:
                return qs.filter(owner__isnull=True) if value == "me_or_unassigned" else qs.none()
            if value == "me_or_unassigned":
                return qs.filter(Q(owner=user) | Q(owner__isnull=True))
            return qs.filter(owner=user)
        return qs.filter(owner_id=int(value))


class SlugFilter(django_filters.CharFilter):
    """A catalogue row (source, form, reason) by its slug, matched on the lead's own
    foreign key: the slug is resolved to its id first (one small query), so the lead
    query compares ``source_id`` with a constant. Joined on the slug instead, PostgreSQL
    cannot use its statistics of the column (45% of the leads come from one source) and
    picks a plan that reads every matching lead before sorting them."""

    def __init__(self, *args, catalogue, **kwargs):
        self.catalogue = catalogue
        super().__init__(*args, max_length=50, **kwargs)

    def filter(self, qs, value):
        if value in ("", None):
            return qs
        ids = list(self.catalogue.objects.filter(slug=value).order_by().values_list("pk", flat=True)[:1])
        if not ids:
            return qs.none()
        return qs.filter(**{f"{self.field_name}_id": ids[0]})


class LeadFilterSet(django_filters.FilterSet):
    # distinct=False: plain columns of the lead, no join to deduplicate; a DISTINCT would
    # stop PostgreSQL from reading the first page straight off an index.
    status = django_filters.MultipleChoiceFilter(
        choices=LeadStatus.choices, label=_("Status (repeat for any of several)"), distinct=False,
    )
    temperature = django_filters.MultipleChoiceFilter(
        choices=Temperature.choices, label=_("Temperature"), distinct=False,
    )
    owner = OwnerFilter(label=_("Owner: a user id, “me” or “unassigned”"))
    source = SlugFilter(field_name="source", catalogue=Source, label=_("Source (slug)"))
    form = SlugFilter(field_name="form", catalogue=Form, label=_("Form (slug)"))
    interest = django_filters.CharFilter(lookup_expr="icontains", max_length=255, label=_("Interest contains"))
    state = StateFilter(choices=sorted((code, code) for code in BRAZIL_STATES), label=_("State (UF)"), distinct=False)
    created_after = CreatedFilter(upper=False, label=_("Created on or after"))
    created_before = CreatedFilter(upper=True, label=_("Created on or before"))
    created_within_days = WithinDaysFilter(label=_("Created in the last N days"))
    score_min = ScoreFilter(lookup_expr="gte", label=_("Score at least"))
    score_max = ScoreFilter(lookup_expr="lte", label=_("Score at most"))
    reason = SlugFilter(field_name="reason", catalogue=Reason, label=_("Reason (slug)"))
    q = django_filters.CharFilter(method="search", max_length=200, label=_("Search name, email, company, phone"))
    ordering = django_filters.ChoiceFilter(
        choices=ORDERING_CHOICES, method="keep", empty_label=None, label=_("Order (default: -score)"),
    )

    class Meta:
        model = Lead
        fields = []

    def search(self, queryset, name, value):
        return selectors.lead_search(queryset, value)

    def keep(self, queryset, name, value):
        # Applied after every filter, in filter_queryset, so the default order applies too.
        return queryset

    def filter_queryset(self, queryset):
        queryset = super().filter_queryset(queryset)
        return queryset.order_by(*order_by(*parse_ordering(self.form.cleaned_data.get("ordering"))))


# What the inbox calls each filter, for its error messages and ``filters_in_words`` (the FilterSet's own labels
# are the API's: "Status (repeat for any of several)", "Source (slug)").
FILTER_LABELS = {
    "status": _("Status"), "temperature": _("Temperature"), "owner": _("Owner"),
    "source": _("Source"), "form": _("Form"), "reason": _("Reason"),
    "interest": _("Interest contains"), "state": _("State (UF)"),
    "created_after": _("Created on or after"), "created_before": _("Created on or before"),
    "created_within_days": _("Created in the last … days"),
    "score_min": _("Score at least"), "score_max": _("Score at most"),
    "q": _("Search name, email, company, phone"), "ordering": _("Sort by"),
}


def filters_in_words(filters):
    """Saved filters (a segment's query parameters) as ``[(label, words)]`` in the order
    the inbox shows them: catalogue slugs as their names, user ids as people, choices as
    their labels. A value that no longer names anything is shown as saved."""
    from django.contrib.auth import get_user_model

    from .models import Form, LeadStatus, Reason, Source, Temperature

    def values(key):
        value = filters.get(key)
        return [str(item) for item in (value if isinstance(value, list) else [value])] if value not in (None, "") \
            else []

    def named(catalogue, slug, attribute):
        row = catalogue.objects.filter(slug=slug).first()
        return getattr(row, attribute) if row else slug

    def person(value):
        special = {"me": _("the person looking"), "unassigned": _("Unassigned"),
                   "me_or_unassigned": _("the person looking, or unassigned")}
        if value in special:
            return str(special[value])
        user = get_user_model().objects.filter(pk=value).first() if value.isdigit() and len(value) <= 18 else None
        return (user.get_full_name() or user.get_username()) if user else value

    choices = {"status": dict(LeadStatus.choices), "temperature": dict(Temperature.choices),
               "ordering": dict(ORDERING_CHOICES)}
    words = []
    for key, label in FILTER_LABELS.items():
        shown = values(key)
        if not shown:
            continue
        if key in choices:
            shown = [str(choices[key].get(value, value)) for value in shown]
        elif key == "owner":
            shown = [person(value) for value in shown]
        elif key in ("source", "form", "reason"):
            catalogue, attribute = {"source": (Source, "name"), "form": (Form, "name"),
                                    "reason": (Reason, "label")}[key]
            shown = [named(catalogue, value, attribute) for value in shown]
        elif key in ("q", "interest"):
            shown = [f"“{value}”" for value in shown]
        words.append((str(label), str(_(" or ")).join(shown)))
    return words
