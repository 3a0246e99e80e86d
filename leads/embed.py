"""The copy-paste HTML snippet marketers put on a landing page for a form."""

from django.conf import settings
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from .models import Form

_INPUTS = {
    "email": ("email", "email", gettext_lazy("Email")),
    "name": ("text", "name", gettext_lazy("Name")),
    "first_name": ("text", "given-name", gettext_lazy("First name")),
    "last_name": ("text", "family-name", gettext_lazy("Last name")),
    "phone": ("tel", "tel", gettext_lazy("Phone")),
    "company": ("text", "organization", gettext_lazy("Company")),
    "job_title": ("text", "organization-title", gettext_lazy("Job title")),
    "company_size": ("number", "", gettext_lazy("Company size (employees)")),
    "country": ("text", "country", gettext_lazy("Country")),
    "state": ("text", "address-level1", gettext_lazy("State")),
    "city": ("text", "address-level2", gettext_lazy("City")),
    "interest": ("text", "", gettext_lazy("What are you looking for?")),
    "budget": ("text", "", gettext_lazy("Budget")),
    "message": ("text", "", gettext_lazy("Message")),
}
_HIDDEN_OR_SEPARATE = {"consent", "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content"}


def endpoint_url(form):
    return settings.FUNIL_BASE_URL.rstrip("/") + reverse("form-submissions", args=[form.slug])


def snippet(form: Form):
    required = set(form.required_fields)
    fields = []
    for name in form.get_accepted_fields():
        if name in _HIDDEN_OR_SEPARATE:
            continue
        input_type, autocomplete, label = _INPUTS.get(name, ("text", "", name.replace("_", " ").capitalize()))
        fields.append({"name": name, "type": input_type, "autocomplete": autocomplete, "label": label,
                       "required": name in required})
    return render_to_string("leads/form_embed.txt", {
        "form": form, "fields": fields, "action": endpoint_url(form),
        "thanks": form.thank_you_message or _("Thank you! We received your message and will be in touch soon."),
    })
