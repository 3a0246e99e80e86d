"""Public endpoints of nurture emails (unsubscribe, open pixel, click redirect) and the
small form endpoints the lead page and the inbox post to (enroll, remove)."""

import base64

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core import signing
from django.http import Http404, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST

from leads.models import Lead

from . import emails, services
from .models import Sequence

PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")


@csrf_exempt
@never_cache
@require_http_methods(["GET", "POST"])
def unsubscribe(request, token):
    """GET: a page that asks to confirm. POST (the page's button, or a mail client's
    RFC 8058 one-click request with ``List-Unsubscribe=One-Click``): unsubscribe at once,
    no login, no cookie, no CSRF token needed, answered with 200."""
    try:
        lead_id, delivery_id = emails.read_unsubscribe_token(token)
    except (signing.BadSignature, KeyError, TypeError, ValueError):
        return render(request, "nurturing/unsubscribe.html", {"invalid": True, **_sender()}, status=404)
    if request.method == "POST":
        one_click = request.POST.get("List-Unsubscribe") == "One-Click"
        services.lead_unsubscribe(lead_id=lead_id, delivery_id=delivery_id, how="one-click" if one_click else "page")
        return render(request, "nurturing/unsubscribe.html", {"done": True, **_sender()})
    return render(request, "nurturing/unsubscribe.html", {"token": token, **_sender()})


@never_cache
def open_pixel(request, token):
    try:
        services.delivery_record_open(delivery_id=emails.read_open_token(token))
    except (signing.BadSignature, TypeError, ValueError):
        pass
    return HttpResponse(PIXEL, content_type="image/gif")


@never_cache
def click(request, token):
    """Follow a tracked link: only to a URL signed into one of our messages."""
    try:
        delivery_id, url = emails.read_click_token(token)
    except (signing.BadSignature, KeyError, TypeError, ValueError):
        raise Http404(_("This link is not valid.")) from None
    services.delivery_record_click(delivery_id=delivery_id, url=url)
    return HttpResponseRedirect(url)


def _back(request, fallback="leads:inbox"):
    from django.urls import reverse

    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                                  require_https=request.is_secure()):
        return HttpResponseRedirect(target)
    return HttpResponseRedirect(reverse(fallback))


def _parse(request):
    sequence = Sequence.objects.filter(pk=request.POST.get("sequence") or 0).first() \
        if str(request.POST.get("sequence", "")).isdigit() else None
    ids = [int(value) for value in request.POST.getlist("leads") if str(value).isdigit()]
    return sequence, list(Lead.objects.filter(pk__in=ids))


@login_required
@require_POST
def enroll(request):
    """POST ``sequence`` (id), ``leads`` (one or more lead ids), ``next`` (where to go back)."""
    sequence, leads = _parse(request)
    if sequence is None or not leads:
        messages.error(request, _("Choose a sequence and at least one lead."))
        return _back(request)
    changed, _unchanged, errors = services.enrollments_by_hand(sequence=sequence, leads=leads, actor=request.user)
    done = len(changed)
    if done:
        messages.success(request, ngettext("%(count)d lead enrolled in %(sequence)s.",
                                           "%(count)d leads enrolled in %(sequence)s.", done)
                         % {"count": done, "sequence": sequence})
    for lead, error in list(errors.items())[:10]:
        messages.warning(request, f"{lead}: {error}")
    return _back(request)


@login_required
@require_POST
def unenroll(request):
    """POST ``sequence`` (id), ``leads`` (ids), ``next``: take the leads out of the sequence."""
    sequence, leads = _parse(request)
    if sequence is None or not leads:
        messages.error(request, _("Choose a sequence and at least one lead."))
        return _back(request)
    changed, _unchanged, errors = services.enrollments_by_hand(
        sequence=sequence, leads=leads, actor=request.user, remove=True
    )
    done = len(changed)
    messages.success(request, ngettext("%(count)d lead removed from %(sequence)s.",
                                       "%(count)d leads removed from %(sequence)s.", done)
                     % {"count": done, "sequence": sequence})
    for lead, error in list(errors.items())[:10]:
        messages.warning(request, f"{lead}: {error}")
    return _back(request)


def _sender():
    """Who the person is unsubscribing from: the company that sends, by name."""
    from django.conf import settings

    return {"sender_name": settings.FUNIL_SENDER_NAME}
