"""Admin forms for rules: the field picker, the operators grouped by the fields they
fit, and a value box that takes JSON (["SP", "RJ"], 5000) or plain text."""

import json

from django import forms
from django.utils.translation import gettext_lazy as _

from . import engine
from .models import Rule

FIELD_DATALIST_ID = "funil-rule-fields"

OPERATOR_LABELS = {
    "equals": _("equals"),
    "not_equals": _("does not equal"),
    "in": _("is one of [list]"),
    "not_in": _("is none of [list]"),
    "contains": _("contains"),
    "contains_any": _("contains any of [list]"),
    "not_contains": _("does not contain"),
    "starts_with": _("starts with"),
    "matches": _("matches the pattern (regular expression)"),
    "email_domain_in": _("email domain is one of [list]"),
    "gt": _("greater than"),
    "gte": _("at least"),
    "lt": _("less than"),
    "lte": _("at most"),
    "between": _("between [from, to]"),
    "is_empty": _("is empty"),
    "is_not_empty": _("is not empty"),
}


def operator_choices():
    """The operators grouped by the fields they fit (``engine.validate_rule`` decides)."""
    text_only = [op for op in engine.TEXT_OPERATORS if op not in engine.NUMBER_OPERATORS]
    both = [op for op in engine.TEXT_OPERATORS if op in engine.NUMBER_OPERATORS and op not in engine.EMPTY_OPERATORS]
    number_only = [op for op in engine.NUMBER_OPERATORS if op not in engine.TEXT_OPERATORS]
    # The codes themselves (they are what rules files use); OPERATOR_LABELS explain them below the rules.
    return [
        ("", "---------"),
        (_("Text or number"), [(op, op) for op in both]),
        (_("Text fields"), [(op, op) for op in text_only]),
        (_("Number fields and engagement counts"), [(op, op) for op in number_only]),
        (_("Any lead field"), [(op, op) for op in engine.EMPTY_OPERATORS]),
    ]


def field_options():
    """(value, label) for the field picker; attributes.<key> is typed freely."""
    return [
        *[(name, _("text")) for name in engine.TEXT_FIELDS],
        *[(name, _("number")) for name in engine.NUMBER_FIELDS],
        *[(name, _("engagement count over the window")) for name in engine.ENGAGEMENT_FIELDS],
        (engine.ATTRIBUTE_PREFIX, _("custom field: type its key after the dot")),
    ]


class RuleValueField(forms.JSONField):
    """JSON, or plain text when it is not JSON: ``palete`` is the text "palete",
    ``5000`` the number, ``["SP", "RJ"]`` a list."""

    def to_python(self, value):
        if isinstance(value, str):
            text = value.strip()
            if text and text[0] not in '[{"':
                try:
                    json.loads(text)
                except ValueError:
                    return text
        return super().to_python(value)

    def prepare_value(self, value):
        if value is None:
            return ""  # is_empty / is_not_empty take no value: an empty box, not "null"
        # Plain text shows without quotes when it reads back as the same text.
        if isinstance(value, str) and value == value.strip() and value and value[0] not in '[{"':
            try:
                json.loads(value)
            except ValueError:
                return value
        return super().prepare_value(value)


class RuleForm(forms.ModelForm):
    value = RuleValueField(
        label=_("value"), required=False,
        help_text=_('JSON or plain text: palete, 5000, ["SP", "RJ"], [10, 50] for between.'),
        widget=forms.TextInput(attrs={"placeholder": '["SP", "RJ"] · 5000 · palete', "size": 16}),
    )
    operator = forms.ChoiceField(label=_("operator"), choices=operator_choices)

    class Meta:
        model = Rule
        fields = ["order", "name", "field", "operator", "value", "window_days", "effect", "points", "reason",
                  "active"]
        widgets = {
            "order": forms.NumberInput(attrs={"style": "width: 3em"}),
            "name": forms.TextInput(attrs={"size": 11}),
            "field": forms.TextInput(attrs={"list": FIELD_DATALIST_ID, "size": 12, "autocomplete": "off",
                                            "placeholder": "state, attributes.frota"}),
            "window_days": forms.NumberInput(attrs={"style": "width: 3em"}),
            "points": forms.NumberInput(attrs={"style": "width: 4em"}),
        }
