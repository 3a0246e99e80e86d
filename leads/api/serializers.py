"""Input and output shapes of the authenticated API.

Inputs only check types and shapes and turn what arrived into the arguments of a
service; normalisation is ``leads.capture.clean_lead_data`` (the same as the public
form endpoint and the CSV import) and rules live in the services.
"""

import datetime
import re

from django.conf import settings
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import extend_schema_serializer
from rest_framework import serializers

from .. import selectors, services
from ..capture import clean_lead_data
from ..models import Form, Lead, LeadEvent, LeadStatus, Source
from .capture import SubmissionInputSerializer

ATTRIBUTE_KEY = re.compile(r"[A-Za-z0-9_-]{1,50}")
CURRENCY = re.compile(r"[A-Z]{3}")
# Lead fields PATCH may change: contact and profile data. Status, owner and score
# change through the actions.
EDITABLE_FIELDS = services.CONTACT_FIELDS
NULLABLE_FIELDS = ("email", "budget", "company_size")


# --- Output -------------------------------------------------------------------------


@extend_schema_serializer(component_name="Lead")
class LeadOutputSerializer(serializers.ModelSerializer):
    # A plain string: stored emails are normalised, not necessarily RFC 5322-strict.
    email = serializers.CharField(read_only=True, allow_null=True)
    owner = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    source = serializers.SlugRelatedField(slug_field="slug", read_only=True, allow_null=True)
    form = serializers.SlugRelatedField(slug_field="slug", read_only=True, allow_null=True)
    reason = serializers.SlugRelatedField(slug_field="slug", read_only=True, allow_null=True)

    class Meta:
        model = Lead
        fields = [
            "id", "email", "first_name", "last_name", "phone", "company", "job_title", "company_size",
            "country", "state", "city", "interest", "budget", "budget_currency", "message", "source", "form",
            "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "owner", "status",
            "status_set_by", "reason", "reason_note", "score", "temperature", "deal_value", "attributes",
            "created_at", "updated_at", "qualified_at", "disqualified_at", "out_of_focus_at", "converted_at",
            "last_activity_at", "requalify_at",
        ]
        read_only_fields = fields


@extend_schema_serializer(component_name="LeadEvent")
class LeadEventOutputSerializer(serializers.ModelSerializer):
    actor = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    reason = serializers.SlugRelatedField(slug_field="slug", read_only=True, allow_null=True)
    # "" on events that are not status changes: the schema's enum must allow it.
    from_status = serializers.ChoiceField(choices=LeadStatus.choices, allow_blank=True, read_only=True)
    to_status = serializers.ChoiceField(choices=LeadStatus.choices, allow_blank=True, read_only=True)

    class Meta:
        model = LeadEvent
        fields = ["id", "kind", "actor", "from_status", "to_status", "reason", "note", "data", "created_at"]
        read_only_fields = fields


@extend_schema_serializer(component_name="Form")
class FormOutputSerializer(serializers.ModelSerializer):
    source = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    fields = serializers.ListField(child=serializers.CharField(), read_only=True)
    required_fields = serializers.ListField(child=serializers.CharField(), read_only=True)
    allowed_origins = serializers.ListField(
        child=serializers.CharField(), source="get_allowed_origins", read_only=True,
        help_text=_("Origins allowed to post; empty: any site."),
    )
    submission_url = serializers.SerializerMethodField(help_text=_("Where the form posts."))
    # A URL, or "" for Funil's own thank-you page (a URI format would refuse the "").
    success_url = serializers.CharField(read_only=True, help_text=_(
        "Where a plain HTML form post is sent after success; empty: Funil's thank-you page."))

    class Meta:
        model = Form
        fields = [
            "slug", "name", "source", "default_interest", "fields", "required_fields", "allowed_origins",
            "success_url", "thank_you_message", "consent_text", "consent_version", "consent_required",
            "honeypot_field", "active", "created_at", "submission_url",
        ]
        read_only_fields = fields

    def get_submission_url(self, form) -> str:
        return f"/api/v1/forms/{form.slug}/submissions/"


# --- Leads: input -------------------------------------------------------------------


class RefuseUnknownFieldsMixin:
    """A key the serializer does not know is an error naming it, not silently lost."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            readonly = set(LeadOutputSerializer.Meta.fields) - set(self.fields)
            errors = {
                key: [_("This field cannot be changed here; use the lead's actions.") if key in readonly
                      else _("Unknown field.")]
                for key in data if key not in self.fields
            }
            if errors:
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)


class LeadCreateSerializer(RefuseUnknownFieldsMixin, SubmissionInputSerializer):
    """Every field the public form endpoint understands, normalised the same way, plus
    the form the lead came through (optional) and custom fields."""

    form = serializers.SlugRelatedField(
        slug_field="slug", queryset=Form.objects.all(), required=False, allow_null=True,
        help_text=_("The form this lead filled in, if any: its consent text is what ``consent`` agrees to."),
    )
    attributes = serializers.DictField(
        child=serializers.CharField(max_length=1000, allow_blank=True), required=False,
        help_text=_("Custom fields (name -> value); names: letters, digits, “-” and “_”."),
    )

    def validate_attributes(self, value):
        bad = [key for key in value if not ATTRIBUTE_KEY.fullmatch(key) or key in Form.STANDARD_FIELDS]
        if bad:
            raise serializers.ValidationError(
                _("Not a custom field name: %(names)s.") % {"names": ", ".join(sorted(bad))[:300]}
            )
        if len(value) > 50:
            raise serializers.ValidationError(_("At most 50 custom fields."))
        return value

    def validate(self, attrs):
        form = attrs.pop("form", None)
        attributes = attrs.pop("attributes", {})
        if attrs.get("consent") and form is None:
            raise serializers.ValidationError({"consent": [_("Give the form whose consent text the lead agreed to.")]})
        clean = clean_lead_data(
            {**attributes, **attrs}, accepted=[*Form.STANDARD_FIELDS, *attributes], standard=Form.STANDARD_FIELDS,
            default_interest=form.default_interest if form else "",
            phone_region=settings.FUNIL_DEFAULT_PHONE_REGION,
        )
        if not clean.is_valid:
            raise serializers.ValidationError({name: [message] for name, message in clean.errors.items()})
        return {"clean": clean, "form": form}


class LeadUpdateSerializer(RefuseUnknownFieldsMixin, serializers.Serializer):
    """Contact and profile fields. Empty (or null) clears a field; a lead keeps an
    email or a phone. Pass the lead as ``context["lead"]``."""

    email = serializers.CharField(required=False, allow_blank=True, allow_null=True, max_length=254)
    first_name = serializers.CharField(required=False, allow_blank=True, max_length=100)
    last_name = serializers.CharField(required=False, allow_blank=True, max_length=150)
    phone = serializers.CharField(required=False, allow_blank=True, max_length=40)
    company = serializers.CharField(required=False, allow_blank=True, max_length=200)
    job_title = serializers.CharField(required=False, allow_blank=True, max_length=150)
    company_size = serializers.CharField(
        required=False, allow_blank=True, allow_null=True, max_length=20,
        help_text=_("Employees: 120, 51-200, 50+."),
    )
    country = serializers.CharField(required=False, allow_blank=True, max_length=2)
    state = serializers.CharField(required=False, allow_blank=True, max_length=40, help_text=_("UF code or name."))
    city = serializers.CharField(required=False, allow_blank=True, max_length=150)
    interest = serializers.CharField(required=False, allow_blank=True, max_length=255)
    budget = serializers.CharField(
        required=False, allow_blank=True, allow_null=True, max_length=40,
        help_text=_("5000, 5.000,00, R$ 5 mil, 5k."),
    )
    budget_currency = serializers.CharField(required=False, min_length=3, max_length=3)
    message = serializers.CharField(required=False, allow_blank=True, max_length=5000)
    utm_source = serializers.CharField(required=False, allow_blank=True, max_length=150)
    utm_medium = serializers.CharField(required=False, allow_blank=True, max_length=150)
    utm_campaign = serializers.CharField(required=False, allow_blank=True, max_length=150)
    utm_term = serializers.CharField(required=False, allow_blank=True, max_length=150)
    utm_content = serializers.CharField(required=False, allow_blank=True, max_length=150)

    def validate_budget_currency(self, value):
        value = value.upper()
        if not CURRENCY.fullmatch(value):
            raise serializers.ValidationError(_("Enter a three-letter currency code, e.g. BRL."))
        return value

    def validate(self, attrs):
        lead = self.context["lead"]
        given = {name: ("" if value is None else value) for name, value in attrs.items()}
        payload = {name: value for name, value in given.items() if name != "budget_currency"}
        clean = clean_lead_data(
            {"country": lead.country, **payload}, accepted=EDITABLE_FIELDS, standard=EDITABLE_FIELDS,
            phone_region=settings.FUNIL_DEFAULT_PHONE_REGION,
        )
        errors = dict(clean.errors)
        if not given.get("email"):
            # clean_lead_data's "email or phone" is about this payload; the rule is about the lead.
            errors.pop("email", None)
        if errors:
            raise serializers.ValidationError({name: [message] for name, message in errors.items()})
        changes = {}
        for name in given:
            if name == "budget_currency":
                changes[name] = given[name]
            elif name in clean.fields:
                changes[name] = clean.fields[name]
            else:
                changes[name] = None if name in NULLABLE_FIELDS else ""
        email = changes["email"] if "email" in changes else lead.email
        phone = changes["phone"] if "phone" in changes else lead.phone
        if not email and not phone:
            raise serializers.ValidationError({"email": [_("A lead needs an email address or a phone number.")]})
        conflict = selectors.lead_contact_conflict(lead, email=email, phone=phone)
        if conflict:
            raise serializers.ValidationError({conflict: [_("Another lead already has this %(field)s.") % {
                "field": conflict}]})
        return changes


# --- Leads: actions -----------------------------------------------------------------


class NoteField(serializers.CharField):
    def __init__(self, **kwargs):
        super().__init__(required=False, allow_blank=True, max_length=5000, **kwargs)


class QualifySerializer(serializers.Serializer):
    note = NoteField()


class DisqualifySerializer(serializers.Serializer):
    reason = serializers.SlugField(max_length=50, help_text=_("A reason slug that applies to disqualified leads."))
    note = NoteField()
    requalify_at = serializers.DateTimeField(
        required=False, allow_null=True, help_text=_("When to evaluate the lead again (in the future)."),
    )

    def validate_requalify_at(self, value):
        if value is None:
            return None
        try:
            value.astimezone(datetime.UTC)
        except OverflowError as exc:
            raise serializers.ValidationError(_("Enter a valid date and time.")) from exc
        if value <= timezone.now():
            raise serializers.ValidationError(_("Choose a moment in the future."))
        return value


class OutOfFocusSerializer(serializers.Serializer):
    reason = serializers.SlugField(max_length=50, help_text=_("A reason slug that applies to out-of-focus leads."))
    note = NoteField()


class ConvertSerializer(serializers.Serializer):
    deal_value = serializers.DecimalField(
        max_digits=14, decimal_places=2, min_value=0, required=False, allow_null=True,
        help_text=_("What the customer's first deal is worth."),
    )
    note = NoteField()


class AssignSerializer(serializers.Serializer):
    owner = serializers.PrimaryKeyRelatedField(
        queryset=selectors.sales_people(), allow_null=True,
        help_text=_("A sales person's user id, or null to unassign. Reps may only claim a lead for themselves."),
    )


class NoteSerializer(serializers.Serializer):
    text = serializers.CharField(max_length=10000)


class RateSerializer(serializers.Serializer):
    fit = serializers.ChoiceField(choices=["good", "bad"], help_text=_("good or bad"))
    note = serializers.CharField(max_length=5000, required=False, allow_blank=True, default="",
                                 help_text=_("Why (required for a bad fit)."))


# --- Forms --------------------------------------------------------------------------


class FieldNameField(serializers.CharField):
    def __init__(self, **kwargs):
        super().__init__(max_length=50, **kwargs)


class FormInputSerializer(serializers.Serializer):
    """A capture form. The service checks it as a whole (required fields accepted,
    origins, unique slug)."""

    slug = serializers.SlugField(max_length=50)
    name = serializers.CharField(max_length=150)
    source = serializers.SlugRelatedField(slug_field="slug", queryset=Source.objects.all())
    default_interest = serializers.CharField(required=False, allow_blank=True, max_length=255)
    fields = serializers.ListField(
        child=FieldNameField(), required=False, max_length=100,
        help_text=_("Field names the form accepts; empty: the usual contact fields. Non-standard names become "
                    "custom fields of the lead."),
    )
    required_fields = serializers.ListField(child=FieldNameField(), required=False, max_length=100)
    allowed_origins = serializers.ListField(
        child=serializers.CharField(max_length=300), required=False, max_length=100,
        help_text=_("scheme://host[:port] of the sites that may post; empty: any site."),
    )
    success_url = serializers.URLField(required=False, allow_blank=True, max_length=200)
    thank_you_message = serializers.CharField(required=False, allow_blank=True, max_length=255)
    consent_text = serializers.CharField(required=False, allow_blank=True, max_length=10000)
    consent_version = serializers.CharField(required=False, allow_blank=True, max_length=30)
    consent_required = serializers.BooleanField(required=False)
    honeypot_field = FieldNameField(required=False)
    active = serializers.BooleanField(required=False)
