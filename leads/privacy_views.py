"""Pages for the lead's rights: the consent ledger, the export and the erasure of one
lead, for sales managers. The lead page links here."""

import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from . import privacy
from .models import Lead


def _lead_for(request, pk):
    if not privacy.can_handle_personal_data(request.user):
        raise PermissionDenied
    return get_object_or_404(Lead, pk=pk)


@login_required
def lead_privacy(request, pk):
    """The consent ledger of a lead, with its export and erasure actions."""
    lead = _lead_for(request, pk)
    return render(request, "leads/dashboard_privacy.html", {
        "lead": lead, "ledger": privacy.consent_ledger(lead),
        "suppressed": privacy.is_suppressed(lead.email) if lead.email else None,
    })


@login_required
def lead_export(request, pk):
    """Everything Funil holds about the lead, as a JSON download (audited)."""
    lead = _lead_for(request, pk)
    data = privacy.lead_export(lead=lead, actor=request.user, via="page")
    response = HttpResponse(
        json.dumps(data, cls=DjangoJSONEncoder, ensure_ascii=False, indent=2),
        content_type="application/json; charset=utf-8",
    )
    response["Content-Disposition"] = f'attachment; filename="funil-lead-{lead.pk}.json"'
    return response


@login_required
def lead_erase(request, pk):
    """GET: what erasure does, and a confirmation. POST (with ``confirm``): erase."""
    lead = _lead_for(request, pk)
    if request.method == "POST":
        if request.POST.get("confirm") != "erase":
            messages.error(request, _("Tick the confirmation to erase this person's data."))
            return redirect("insights:lead-erase", pk=lead.pk)
        privacy.lead_erase(lead=lead, actor=request.user, via="page", request_note=request.POST.get("note", ""))
        messages.success(request, _("The person's data was erased. The lead stays in the figures, anonymised."))
        return redirect("insights:lead-privacy", pk=lead.pk)
    return render(request, "leads/dashboard_erase.html", {"lead": lead})


@login_required
@require_POST
def lead_consent_withdraw(request, pk):
    """Record that the person withdrew consent (e.g. asked by phone)."""
    lead = _lead_for(request, pk)
    privacy.consent_withdraw(lead=lead, actor=request.user, via="page", note=request.POST.get("note", ""))
    messages.success(request, _("The withdrawal was recorded; no more marketing email goes to this address."))
    return redirect("insights:lead-privacy", pk=lead.pk)
