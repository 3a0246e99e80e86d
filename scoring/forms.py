"""Admin forms for rules, in the marketer's words and number format.

The field is picked from a list labelled in words (a custom form field's key is typed
beside it), the operators read as words, and the value box takes what a person types:
``palete``, ``SP, RJ``, and numbers as Brazilians write them (``20.000``, ``20.000,50``,
``R$ 20.000``, ``20k``), read by the project's budget parser (``leads.normalize``). A
stored value shows back the same way. The API and the rules files keep speaking JSON:
this is the admin form only."""

import csv
import json
import re
from decimal import Decimal

from django import forms
from django.utils import formats
from django.utils.functional import lazy
from django.utils.text import capfirst
from django.utils.translation import gettext_lazy as _

from leads.normalize import normalize_budget

from . import engine
from .labels import OPERATOR_LABELS, field_label, value_text
from .models import Rule

NUMBER_COMPARISONS = ("gt", "gte", "lt", "lte", "between")
# Fields that count things: a whole number of employees, of submissions, of emails.
WHOLE_NUMBER_FIELDS = ("company_size", *engine.ENGAGEMENT_FIELDS)
# Between numbers: ";" or a comma followed by a space ("5.000, 20.000"), a dash, or a
# word ("5.000 a 20.000"). A comma right before a digit belongs to the number (20.000,50).
NUMBER_SEPARATORS = re.compile(r"\s*;\s*|,\s+|\s+(?:a|e|até|to|and)\s+|\s*[–—]\s*|\s+-\s+", re.IGNORECASE)

_field_label = lazy(field_label, str)


def operator_choices():
    """The operators in words, grouped by the fields they fit (``engine.validate_rule`` decides)."""
    text_only = [op for op in engine.TEXT_OPERATORS if op not in engine.NUMBER_OPERATORS]
    both = [op for op in engine.TEXT_OPERATORS if op in engine.NUMBER_OPERATORS and op not in engine.EMPTY_OPERATORS]
    number_only = [op for op in engine.NUMBER_OPERATORS if op not in engine.TEXT_OPERATORS]
    return [
        ("", "---------"),
        (_("Text or number"), [(op, OPERATOR_LABELS[op]) for op in both]),
        (_("Text fields"), [(op, OPERATOR_LABELS[op]) for op in text_only]),
        (_("Number fields and engagement counts"), [(op, OPERATOR_LABELS[op]) for op in number_only]),
        (_("Any lead field"), [(op, OPERATOR_LABELS[op]) for op in engine.EMPTY_OPERATORS]),
    ]


def field_choices():
    """The fields a rule can use, in words; the codes stay what is stored."""
    return [
        ("", "---------"),
        (_("Text fields"), [(name, _field_label(name)) for name in engine.TEXT_FIELDS]),
        (_("Number fields"), [(name, _field_label(name)) for name in engine.NUMBER_FIELDS]),
        (_("Engagement counts over the window"), [(name, _field_label(name)) for name in engine.ENGAGEMENT_FIELDS]),
        (_("Custom form field"), [(engine.ATTRIBUTE_PREFIX, _("Custom field: type its key"))]),
    ]


# --- The field: a list, and the key of a custom field ------------------------------------


class FieldPickerWidget(forms.MultiWidget):
    """A select of the fields and, beside it, the key of a custom field (``attributes.<key>``),
    shown when the custom field is picked."""

    def __init__(self, attrs=None):
        super().__init__([
            forms.Select(choices=field_choices(), attrs={"class": "funil-field-name"}),
            forms.TextInput(attrs={"class": "funil-attribute-key", "size": 10, "autocomplete": "off",
                                   "placeholder": _("key, e.g. frota"), "aria-label": _("custom field key")}),
        ], attrs)

    def decompress(self, value):
        value = value or ""
        if value.startswith(engine.ATTRIBUTE_PREFIX):
            return [engine.ATTRIBUTE_PREFIX, value[len(engine.ATTRIBUTE_PREFIX):]]
        return [value, ""]

    def value_from_datadict(self, data, files, name):
        if f"{name}_0" not in data and name in data:
            return self.decompress(data.get(name))  # the stored code itself, e.g. "attributes.frota"
        return super().value_from_datadict(data, files, name)

    def value_omitted_from_data(self, data, files, name):
        return name not in data and super().value_omitted_from_data(data, files, name)

    def get_context(self, name, value, attrs):
        context = super().get_context(name, value, attrs)
        picked, key = context["widget"]["subwidgets"]
        if picked["value"] != [engine.ATTRIBUTE_PREFIX]:
            key["attrs"]["hidden"] = True
        return context


class RuleFieldField(forms.CharField):
    """The field's code: the picked field, or ``attributes.`` and the typed key."""

    widget = FieldPickerWidget

    def to_python(self, value):
        if isinstance(value, list | tuple):
            picked, key = (list(value) + ["", ""])[:2]
            picked, key = (picked or "").strip(), (key or "").strip()
            if picked == engine.ATTRIBUTE_PREFIX:
                key = key.removeprefix(engine.ATTRIBUTE_PREFIX)
                if not key:
                    raise forms.ValidationError(_("Type the custom field's key."), code="attribute_key")
                value = picked + key
            else:
                value = picked
        return super().to_python(value)


# --- The value: as a person types it ------------------------------------------------------


def _kind(field_name):
    try:
        return engine.field_kind(field_name or "")
    except engine.RuleError:
        return None


def is_numeric(field_name, operator):
    """Does this rule compare numbers (the engine's reading, ``engine.validate_rule``)?"""
    return _kind(field_name) in ("number", "engagement") or operator in NUMBER_COMPARISONS


def _examples():
    return " · ".join([
        value_text(20000), formats.number_format(Decimal("20000.50"), 2, use_l10n=True, force_grouping=True),
        f"R$\u00a0{value_text(20000)}", "20k",  # R$ and its number on one line
    ])


def _unquote(text):
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        try:
            unquoted = json.loads(text)
        except ValueError:
            return text
        return unquoted if isinstance(unquoted, str) else text
    return text


def _first_group(digits):
    return 1 <= len(digits) <= 3 and digits.isdigit() and not digits.startswith("0")


def _grouped(integer, mark):
    """Are the thousands grouped by threes after the first one to three digits ("20.000.000")?"""
    head, *groups = integer.split(mark)
    return _first_group(head) and all(len(group) == 3 and group.isdigit() for group in groups)


def read_number(text, *, in_list=False):
    """One number as a person types it → ``Decimal``, or ``ValidationError`` in their words.

    ``leads.normalize.normalize_budget`` reads it ("20.000" is twenty thousand, "20.000,50",
    "R$ 20.000", "20k", "5,5 mil"); before that, what it would guess is refused: a separator
    the reader also uses as the decimal mark before three digits ("1,500" in Portuguese,
    "20.000" in English), thousands not grouped by three, more than two decimals, or digits
    split by a space."""
    raw = _unquote(text)
    body = raw
    negative = body.startswith("-")
    if negative:
        body = body[1:].lstrip()
    unreadable = forms.ValidationError(
        _("“%(value)s” is not a number. Write it as in: %(examples)s."), code="number",
        params={"value": raw, "examples": _examples()})
    several = forms.ValidationError(
        _("Is “%(value)s” one number or several? Separate numbers with “;” or with a comma and a space."),
        code="separator", params={"value": raw})
    if re.search(r"[0-9.,]\s+[0-9]", body):
        raise several if in_list else unreadable
    try:
        amount = normalize_budget(body)
    except ValueError:
        raise unreadable from None
    if amount is None:
        raise unreadable
    digits = re.search(r"[0-9.,]+", body).group()
    marks = [char for char in digits if char in ".,"]
    decimals = 0
    if marks:
        if not digits[0].isdigit() or not digits[-1].isdigit() or re.search(r"[.,]{2}", digits):
            raise unreadable
        if len(set(marks)) == 2:
            decimal_mark = marks[-1]
            thousands = "," if decimal_mark == "." else "."
            integer, _sep, fraction = digits.rpartition(decimal_mark)
            if marks.count(decimal_mark) != 1 or not _grouped(integer, thousands):
                raise unreadable
            decimals = len(fraction)
        elif len(marks) > 1:
            if not _grouped(digits, marks[0]):
                raise several if in_list and marks[0] == "," else unreadable
        else:
            mark = marks[0]
            head, _sep, tail = digits.partition(mark)
            if len(tail) == 3 and _first_group(head):
                if mark == formats.get_format("DECIMAL_SEPARATOR"):
                    fraction = tail.rstrip("0")
                    raise forms.ValidationError(
                        _("“%(value)s” can be read two ways: write %(whole)s or %(decimal)s."), code="ambiguous",
                        params={"value": raw, "whole": raw.replace(digits, head + tail),
                                "decimal": raw.replace(digits, head + (mark + fraction if fraction else ""))})
            else:
                decimals = len(tail)
    if decimals > 2:
        if in_list and "," in digits:
            raise several
        raise forms.ValidationError(_("“%(value)s” has more than two decimals."), code="decimals",
                                    params={"value": raw})
    return -amount if negative else amount


def _json_number(amount):
    return int(amount) if amount == amount.to_integral_value() else float(amount)


def read_value(text, field_name, operator):
    """What the marketer typed in the value box → the rule's (JSON) value.

    Numbers (number fields, engagement counts, comparisons, ``between``) are read as a person
    writes them; lists are separated by commas (``SP, RJ``) or written in JSON
    (``["SP", "RJ"]``); text needs no quotes. ``engine.validate_rule`` then checks the shape."""
    text = (text or "").strip()
    if operator in engine.EMPTY_OPERATORS or not text:
        return None
    many = operator in engine.LIST_OPERATORS or operator == "between"
    if is_numeric(field_name, operator):
        if not many:
            pieces = [text]
        elif text.startswith("[") and text.endswith("]"):
            pieces = text[1:-1].split(",")  # JSON: commas separate the numbers
        else:
            pieces = NUMBER_SEPARATORS.split(text)
        pieces = [piece.strip() for piece in pieces if piece.strip()]
        numbers = [read_number(piece, in_list=many) for piece in pieces]
        if field_name in WHOLE_NUMBER_FIELDS:
            for number, piece in zip(numbers, pieces, strict=True):
                if number != number.to_integral_value():
                    raise forms.ValidationError(_("Give a whole number, not %(value)s."), code="whole",
                                                params={"value": piece})
        values = [_json_number(number) for number in numbers]
        return values if many else values[0]
    if operator in engine.LIST_OPERATORS:
        if text.startswith("["):
            try:
                return json.loads(text)
            except ValueError:
                raise forms.ValidationError(forms.JSONField.default_error_messages["invalid"],
                                            code="invalid") from None
        # Commas separate the items; an item with a comma of its own goes in quotes ("Rio, RJ").
        return [item.strip() for item in next(csv.reader([text], skipinitialspace=True)) if item.strip()]
    return _unquote(text)


def _plain(item):
    """Can this list item show as typed (in quotes when it has a comma) and read back the same?"""
    return isinstance(item, str) and bool(item) and item == item.strip() and '"' not in item


def _number_text(item):
    number = engine.as_number(item)
    return str(item) if number is None else value_text(number)


def show_value(value, field_name, operator):
    """A stored value as the marketer would type it: ``SP, RJ``, ``20.000`` and ``5.000; 20.000``
    (in the reader's format), ``palete``; JSON only for what would not read back the same."""
    if value is None:
        return ""
    numeric = is_numeric(field_name, operator)
    if isinstance(value, list):
        if numeric and all(engine.as_number(item) is not None for item in value):
            # "; " between numbers: a comma is part of a number in either language (20.000,50 / 20,000).
            return "; ".join(_number_text(item) for item in value)
        if value and all(_plain(item) or (isinstance(item, int | float) and not isinstance(item, bool))
                         for item in value):
            return ", ".join(f'"{item}"' if isinstance(item, str) and "," in item else str(item) for item in value)
        return json.dumps(value, ensure_ascii=False)
    if numeric and engine.as_number(value) is not None:
        return _number_text(value)
    if isinstance(value, str):
        plain = value == value.strip() and not (value.startswith('"') and value.endswith('"'))
        return value if plain and value else json.dumps(value, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False)


class RuleForm(forms.ModelForm):
    field = RuleFieldField(label=capfirst(_("field")))
    operator = forms.ChoiceField(label=capfirst(_("operator")), choices=operator_choices)
    value = forms.CharField(
        label=capfirst(_("value")), required=False,
        help_text=lazy(lambda: _("As you would write it: palete · SP, RJ · %(examples)s · %(low)s; %(high)s for "
                                 "between.") % {"examples": _examples(), "low": value_text(5000),
                                                "high": value_text(20000)}, str)(),
        widget=forms.TextInput(attrs={"size": 26, "placeholder": lazy(
            lambda: f"SP, RJ · {value_text(20000)} · palete", str)()}),
    )

    class Meta:
        model = Rule
        fields = ["order", "name", "field", "operator", "value", "window_days", "effect", "points", "reason",
                  "active"]
        widgets = {
            "order": forms.NumberInput(attrs={"style": "width: 3em"}),
            "name": forms.TextInput(attrs={"size": 14}),
            "window_days": forms.NumberInput(attrs={"style": "width: 3.5em"}),
            "points": forms.NumberInput(attrs={"style": "width: 4em"}),
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["value"] = show_value(self.instance.value, self.instance.field, self.instance.operator)

    def clean(self):
        cleaned = super().clean()
        field_name, operator, text = cleaned.get("field"), cleaned.get("operator"), cleaned.get("value")
        if "value" not in cleaned:
            return cleaned
        untouched = (self.instance.pk and text == self.initial.get("value")
                     and (field_name, operator) == (self.instance.field, self.instance.operator))
        if untouched:
            cleaned["value"] = self.instance.value  # as stored, even what the box could not say exactly
            return cleaned
        try:
            cleaned["value"] = read_value(text, field_name, operator)
        except forms.ValidationError as error:
            self.add_error("value", error)
        return cleaned

    def _post_clean(self):
        # What the form could not read is said once: Rule.clean would add its own complaint
        # about the field or the value it never received.
        said = {name: len(self._errors[name]) for name in ("field", "operator", "value") if name in self._errors}
        super()._post_clean()
        for name, count in said.items():
            del self._errors[name].data[count:]
