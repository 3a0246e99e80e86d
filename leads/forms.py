"""The triage UI's forms: they parse and check input; the views pass the result to one service."""

import datetime
from decimal import Decimal

from django import forms
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from . import selectors
from .models import Fit, Form, LeadStatus, Reason


def _reasons(status):
    return Reason.objects.filter(active=True, kind__in=[status, Reason.Kind.BOTH]).order_by("label")


class ReasonField(forms.ModelChoiceField):
    def __init__(self, status, **kwargs):
        super().__init__(queryset=_reasons(status), label=_("Reason"), empty_label=_("Choose a reason"), **kwargs)


class QualifyForm(forms.Form):
    note = forms.CharField(label=_("Note"), required=False, max_length=5000, widget=forms.Textarea(attrs={"rows": 2}))


class DisqualifyForm(forms.Form):
    reason = ReasonField(LeadStatus.DISQUALIFIED)
    note = forms.CharField(label=_("Note"), required=False, max_length=5000, widget=forms.Textarea(attrs={"rows": 2}))
    requalify_on = forms.DateField(
        label=_("Look at it again on"), required=False, widget=forms.DateInput(attrs={"type": "date"}),
        help_text=_("Optional: requalification re-evaluates the lead on this date."),
    )

    def clean_requalify_on(self):
        day = self.cleaned_data.get("requalify_on")
        if day is not None and day <= timezone.localdate():
            raise forms.ValidationError(_("Choose a date after today."))
        return day

    def service_arguments(self):
        day = self.cleaned_data.get("requalify_on")
        at = timezone.make_aware(datetime.datetime.combine(day, datetime.time(6, 0))) if day else None
        return {"reason": self.cleaned_data["reason"], "note": self.cleaned_data["note"], "requalify_at": at}


class OutOfFocusForm(forms.Form):
    reason = ReasonField(LeadStatus.OUT_OF_FOCUS)
    note = forms.CharField(label=_("Note"), required=False, max_length=5000, widget=forms.Textarea(attrs={"rows": 2}))


class MoneyField(forms.Field):
    """An amount in reais typed as text and read the Brazilian way as well as the English
    one (``normalize.parse_amount``): "15.000", "15.000,50", "R$ 15.000", "15k", "15000.50".
    Not an ``<input type=number>``: a browser in pt-BR reads "15000,50" there as 1500050
    and refuses "15.000". Returns a Decimal with two places."""

    widget = forms.TextInput(attrs={"inputmode": "decimal", "autocomplete": "off", "spellcheck": "false"})
    default_error_messages = {
        "invalid": _("Enter an amount in reais, e.g. 15,000.50, 15000 or 15k."),
        "negative": _("The amount cannot be negative."),
        "cents": _("Use at most two decimal places (centavos)."),
        "too_large": _("The amount is too large."),
    }
    LIMIT = Decimal("1e12")  # the model's max_digits=14, decimal_places=2

    def to_python(self, value):
        from .normalize import parse_amount

        if isinstance(value, Decimal):
            amount = value
        else:
            text = str(value or "").strip()
            if text.startswith("-"):
                raise forms.ValidationError(self.error_messages["negative"], code="negative")
            try:
                amount = parse_amount(text, strict=True)
            except ValueError:
                raise forms.ValidationError(self.error_messages["invalid"], code="invalid") from None
        if amount is None:
            return None
        if not amount.is_finite():
            raise forms.ValidationError(self.error_messages["invalid"], code="invalid")
        if amount < 0:
            raise forms.ValidationError(self.error_messages["negative"], code="negative")
        if amount >= self.LIMIT:
            raise forms.ValidationError(self.error_messages["too_large"], code="too_large")
        if amount != amount.quantize(Decimal("0.01")):
            raise forms.ValidationError(self.error_messages["cents"], code="cents")
        return amount.quantize(Decimal("0.01"))


class ConvertForm(forms.Form):
    deal_value = MoneyField(label=_("Deal value (BRL)"),
                            help_text=_("In reais, e.g. 15,000.50, 15000 or 15k."))
    note = forms.CharField(label=_("Note"), required=False, max_length=5000, widget=forms.Textarea(attrs={"rows": 2}))


class NoteForm(forms.Form):
    text = forms.CharField(label=_("Note"), max_length=10000, widget=forms.Textarea(attrs={"rows": 3}))


class RateForm(forms.Form):
    fit = forms.ChoiceField(label=_("Lead quality"), choices=Fit.choices, widget=forms.RadioSelect)
    note = forms.CharField(
        label=_("Why"), required=False, max_length=5000, widget=forms.Textarea(attrs={"rows": 2}),
        help_text=_("Required for a bad fit: marketing reads it next to the rules that let the lead through."),
    )

    def clean(self):
        data = super().clean()
        if data.get("fit") == Fit.BAD and not (data.get("note") or "").strip():
            self.add_error("note", _("Say why the lead is a bad fit."))
        return data


class OwnerField(forms.ModelChoiceField):
    def label_from_instance(self, user):
        return user.get_full_name() or user.get_username()


class AssignForm(forms.Form):
    owner = OwnerField(queryset=None, label=_("Assign to"), required=False, empty_label=_("Nobody (unassign)"))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["owner"].queryset = selectors.sales_people().order_by("first_name", "username")


class BulkForm(forms.Form):
    ACTIONS = [
        ("claim", _("Claim")),
        ("assign", _("Assign to")),
        ("disqualify", _("Disqualify")),
        ("out_of_focus", _("Out of focus")),
        ("enroll", _("Enroll in a nurture sequence")),
        ("unenroll", _("Remove from a nurture sequence")),
    ]
    action = forms.ChoiceField(label=_("Action"), choices=ACTIONS)
    leads = forms.TypedMultipleChoiceField(coerce=int, label=_("Leads"))
    owner = OwnerField(queryset=None, label=_("Assign to"), required=False)
    reason = forms.ModelChoiceField(
        queryset=Reason.objects.filter(active=True).order_by("label"), label=_("Reason"), required=False,
    )
    note = forms.CharField(label=_("Note"), required=False, max_length=5000)
    sequence = forms.ModelChoiceField(queryset=None, label=_("Sequence"), required=False)

    def __init__(self, *args, **kwargs):
        from nurturing.models import Sequence

        super().__init__(*args, **kwargs)
        self.fields["owner"].queryset = selectors.sales_people().order_by("first_name", "username")
        self.fields["sequence"].queryset = Sequence.objects.order_by("name")
        self.fields["leads"].error_messages["required"] = _("Select at least one lead.")

    def full_clean(self):
        # Any id may be posted; the view checks each against what the person may see.
        self.fields["leads"].choices = [(value, value) for value in self.data.getlist("leads") if value.isdigit()]
        super().full_clean()

    def clean(self):
        data = super().clean()
        action = data.get("action")
        if action == "assign" and not data.get("owner"):
            self.add_error("owner", _("Choose whom to assign the leads to."))
        if action in ("disqualify", "out_of_focus"):
            reason = data.get("reason")
            if reason is None:
                self.add_error("reason", _("Choose a reason."))
            elif not reason.applies_to(LeadStatus.DISQUALIFIED if action == "disqualify" else LeadStatus.OUT_OF_FOCUS):
                self.add_error("reason", _("This reason does not apply to this status."))
        if action in ("enroll", "unenroll") and not data.get("sequence"):
            self.add_error("sequence", _("Choose a sequence."))
        return data


class SaveViewForm(forms.Form):
    name = forms.CharField(label=_("Save this view as"), max_length=120)
    # A view is its author's own unless they share it (most are "my leads in SP").
    shared = forms.BooleanField(label=_("Share with everyone"), required=False)


class FieldNamesField(forms.CharField):
    """A list of form field names typed as text: "name, email, phone" (commas, spaces or
    new lines), stored as the JSON list the model keeps. Each name is checked like the
    API checks it (``services._FIELD_NAME``), and may appear once."""

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault("widget", forms.Textarea(attrs={"rows": 2, "cols": 90}))
        super().__init__(**kwargs)

    def prepare_value(self, value):
        if isinstance(value, list):
            return ", ".join(str(item) for item in value)
        return value

    def to_python(self, value):
        import re

        from .services import _FIELD_NAME

        text = super().to_python(value) or ""
        names = [name for name in re.split(r"[\s,;]+", text.strip()) if name]
        wrong = [name for name in names if not re.fullmatch(_FIELD_NAME, name)]
        if wrong:
            raise forms.ValidationError(
                _("Not a field name: %(names)s. Use letters, digits, “-” and “_”, at most 50 characters."),
                params={"names": ", ".join(wrong)}, code="invalid",
            )
        if len(set(names)) != len(names):
            raise forms.ValidationError(_("Each field may be listed once."), code="duplicate")
        return names


def _urls_assume_https(field, **kwargs):
    """A URL typed without a scheme is https (Django 6's default, said now)."""
    if isinstance(field, models.URLField):
        kwargs["assume_scheme"] = "https"
    return field.formfield(**kwargs)


class FormAdminForm(forms.ModelForm):
    """The form's fields as text lists rather than JSON."""

    fields = FieldNamesField(
        label=_("Accepted fields"),
        help_text=_("Separated by commas, e.g. name, email, phone, company. Standard fields: %(standard)s. Other "
                    "names are kept as custom fields of the lead. Empty: the usual contact fields."),
    )
    required_fields = FieldNamesField(
        label=_("Required fields"),
        help_text=_("Separated by commas. A lead always needs an email or a phone."),
    )

    class Meta:
        model = Form
        formfield_callback = _urls_assume_https
        fields = ["name", "slug", "source", "default_interest", "active", "fields", "required_fields",
                  "honeypot_field", "success_url", "thank_you_message", "consent_text", "consent_version",
                  "consent_required", "allowed_origins"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        field = self.fields["fields"]
        field.help_text = field.help_text % {"standard": ", ".join(Form.STANDARD_FIELDS)}

    def clean(self):
        cleaned = super().clean()
        accepted = cleaned.get("fields")
        required = cleaned.get("required_fields")
        if accepted and required:
            from .capture import ALWAYS_ACCEPTED

            missing = [name for name in required if name not in set(accepted) | set(ALWAYS_ACCEPTED)]
            if missing:
                self.add_error("required_fields", _("Required fields must also be accepted: %(names)s.")
                               % {"names": ", ".join(missing)})
        return cleaned
