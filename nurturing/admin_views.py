"""Admin pages of email templates: the preview for a chosen lead and the test send."""

from django.contrib import messages
from django.core.mail import get_connection
from django.shortcuts import get_object_or_404, redirect
from django.template import TemplateSyntaxError
from django.template.response import TemplateResponse
from django.utils.translation import gettext as _

from leads.models import Lead
from leads.normalize import normalize_email

from .emails import build_message
from .models import EmailTemplate


def sample_lead():
    """A lead for previews when none is chosen: unsaved, with typical values."""
    return Lead(pk=0, first_name="Ana", last_name="Souza", email="ana.souza@example.com",
                company="Paletes Exemplo Ltda", job_title="Compradora", state="SP", city="São Paulo",
                interest="paletes PBR")


def _rendered(template, lead):
    message, _id = build_message(template=template, lead=lead, to=lead.email or "preview@example.com", track=False)
    html = message.alternatives[0][0] if message.alternatives else ""
    return message, html


def find_lead(value):
    """The lead a marketer names in the preview box: its id or its email address, any
    case. ``(lead, problem)``: no lead and no problem for an empty box."""
    value = (value or "").strip()
    if not value:
        return None, ""
    if value.isascii() and value.isdigit():
        lead = Lead.objects.filter(pk=int(value)).first() if len(value) <= 18 else None
        return lead, "" if lead else _("No lead with this id; showing a sample lead.")
    try:
        email = normalize_email(value)  # as leads keep it: lower case, the domain in IDNA
    except ValueError:
        return None, _("Enter a lead's id or email address; showing a sample lead.")
    lead = Lead.objects.filter(email=email).first()  # unique, as capture keeps it
    return lead, "" if lead else _("No lead with this email; showing a sample lead.")


def preview(model_admin, request, object_id):
    template = get_object_or_404(EmailTemplate, pk=object_id)
    asked = request.GET.get("lead", "").strip()
    found, problem = find_lead(asked)
    if problem:
        messages.warning(request, problem)
    lead = found or sample_lead()
    context = {**model_admin.admin_site.each_context(request), "opts": model_admin.model._meta,
               "original": template, "lead": lead, "sample": found is None, "asked": asked,
               "title": _("Preview: %s") % template}
    try:
        message, html = _rendered(template, lead)
        context.update(subject=message.subject, html=html, text=message.body,
                       headers=message.extra_headers)
    except TemplateSyntaxError as error:
        context["error"] = str(error)
    return TemplateResponse(request, "admin/nurturing/emailtemplate/preview.html", context)


def test_send(model_admin, request, object_id):
    template = get_object_or_404(EmailTemplate, pk=object_id)
    if request.method != "POST":
        return redirect("admin:nurturing_emailtemplate_preview", object_id)
    if not request.user.email:
        messages.error(request, _("Your user has no email address to send the test to."))
        return redirect("admin:nurturing_emailtemplate_preview", object_id)
    lead = find_lead(request.POST.get("lead", ""))[0] or sample_lead()
    try:
        message, _id = build_message(template=template, lead=lead, to=request.user.email, track=False,
                                     connection=get_connection())
        message.subject = _("[Test] %s") % message.subject
        message.send()
    except TemplateSyntaxError as error:
        messages.error(request, _("The template does not render: %s") % error)
    except Exception as error:  # noqa: BLE001 - the email server's answer is shown, not a 500
        messages.error(request, _("The test email could not be sent: %s") % error)
    else:
        messages.success(request, _("Test email sent to %s.") % request.user.email)
    url = f"{request.path.rsplit('/test-send/', 1)[0]}/preview/"
    return redirect(url + (f"?lead={lead.pk}" if lead.pk else ""))
