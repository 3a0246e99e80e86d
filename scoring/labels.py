"""Rules in words: what a rule looks at, as a person would say it ("State is not one of
SP"), for the lead page's explanation and the operator choices in admin."""

from decimal import Decimal

from django.core.exceptions import FieldDoesNotExist
from django.utils import formats
from django.utils.text import capfirst
from django.utils.translation import gettext_lazy as _

from . import engine

OPERATOR_LABELS = {
    "equals": _("is"),
    "not_equals": _("is not"),
    "in": _("is one of"),
    "not_in": _("is not one of"),
    "contains": _("contains"),
    "contains_any": _("contains any of"),
    "not_contains": _("does not contain"),
    "starts_with": _("starts with"),
    "gt": _("is more than"),
    "gte": _("is at least"),
    "lt": _("is less than"),
    "lte": _("is at most"),
    "between": _("is between"),
    "is_empty": _("is empty"),
    "is_not_empty": _("is filled in"),
    "email_domain_in": _("has its domain among"),
    "matches": _("matches the pattern"),
}
assert set(OPERATOR_LABELS) == set(engine.OPERATORS), "every operator needs its words"

OPERATOR_CHOICES = [(operator, OPERATOR_LABELS[operator]) for operator in engine.OPERATORS]

ENGAGEMENT_LABELS = {
    "submissions": _("Form submissions"),
    "email_opens": _("Emails opened"),
    "email_clicks": _("Email clicks"),
}


def field_label(name):
    """The words for a rule's field: the lead field's own name, the custom field's key,
    or the engagement count."""
    if name in ENGAGEMENT_LABELS:
        return str(ENGAGEMENT_LABELS[name])
    if name.startswith(engine.ATTRIBUTE_PREFIX):
        return name[len(engine.ATTRIBUTE_PREFIX):]
    from leads.models import Lead

    try:
        return str(capfirst(Lead._meta.get_field(name).verbose_name))
    except FieldDoesNotExist:
        return name


def value_text(value):
    """A rule's value as text: numbers in the reader's format, lists joined."""
    if isinstance(value, list | tuple):
        return ", ".join(value_text(item) for item in value)
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, int | float | Decimal):
        decimals = 0 if float(value).is_integer() else None
        return formats.number_format(value, decimals, use_l10n=True, force_grouping=True)
    return str(value)


def criterion(field, operator, value, window_days=None):
    """"State is not one of SP", "Budget is at least 20,000", "Budget is between 5,000
    and 20,000", "Job title is empty"; with ``window_days``, an engagement count says its
    window ("Email clicks in the last 14 days is at least 2")."""
    name = field_label(field)
    if window_days and field in engine.ENGAGEMENT_FIELDS:
        name = str(_("%(field)s in the last %(days)s days") % {"field": name, "days": window_days})
    words = [name, str(OPERATOR_LABELS.get(operator, operator))]
    if operator not in engine.EMPTY_OPERATORS:
        if operator == "between" and isinstance(value, list | tuple) and len(value) == 2:
            words.append(str(_("%(low)s and %(high)s") % {"low": value_text(value[0]), "high": value_text(value[1])}))
        else:
            words.append(value_text(value))
    return " ".join(word for word in words if word)
