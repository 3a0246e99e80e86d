"""The triage UI. Views parse and authorise, then call one service; reads go through
selectors and the lead list's one FilterSet, so the inbox, the API and saved segments
mean the same thing by the same filters."""

import time

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Max
from django.http import HttpResponseRedirect, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_GET, require_POST
from rest_framework.exceptions import ValidationError as DRFValidationError
from rest_framework.request import Request

from nurturing.models import Sequence
from nurturing.selectors import lead_enrollments

from . import forms, privacy, roles, selectors, services
from .api.pagination import LeadCursorPagination
from .filters import FILTER_LABELS, ORDERING_CHOICES, LeadFilterSet
from .models import Form, LeadStatus, Source, Temperature
from .normalize import BRAZIL_STATES

FILTER_KEYS = ("status", "temperature", "owner", "source", "form", "interest", "state", "created_after",
               "created_before", "created_within_days", "score_min", "score_max", "reason", "q", "ordering")
PAGE_SIZES = (25, 50, 100, 200)
MAX_PAGE_SIZE = max(PAGE_SIZES)
FRESH_LIMIT = 20


class InboxPagination(LeadCursorPagination):
    page_size = 50
    max_page_size = max(PAGE_SIZES)


def default_filters(user):
    """A rep's default view: qualified leads that are theirs or unassigned, hottest first.
    Managers and marketers: every qualified lead."""
    query = QueryDict(mutable=True)
    query["status"] = LeadStatus.QUALIFIED
    if not roles.is_manager(user) and roles.is_sales(user):
        query["owner"] = "me_or_unassigned"
    return query


def inbox_filters(request):
    """The filters of this request: those in the URL, or the default view when the URL
    names none (so that clearing every filter shows every lead, not the default)."""
    if any(key in request.GET for key in FILTER_KEYS):
        query = QueryDict(mutable=True)
        for key, values in request.GET.lists():
            kept = [value for value in values if value.strip() != ""]
            if kept:
                query.setlist(key, kept)
        return query, False
    query = default_filters(request.user)
    for key, values in request.GET.lists():
        query.setlist(key, values)
    return query, True


def _inbox_rows(request, query):
    filterset = LeadFilterSet(query, queryset=selectors.lead_list_for(request.user), request=request)
    if not filterset.is_valid():
        return filterset, None, None
    return filterset, filterset.qs, None


@login_required
@require_GET
def inbox(request):
    """The inbox: the filtered list, keyset-paginated, with its total."""
    query, is_default = inbox_filters(request)
    # The rows a bulk action refused come back ticked, to act on them another way.
    checked = {int(value) for value in query.pop("selected", [""])[-1].split(",")[:MAX_PAGE_SIZE]
               if value.isdigit()}
    filterset, leads, _unused = _inbox_rows(request, query)
    context = {
        "query": query, "is_default": is_default, "filterset": filterset, "rows": [], "total": None,
        "exact": True, "next_url": None, "previous_url": None, "cursor_error": None,
        "filter_errors": filter_errors(filterset.errors),
        # How many filters narrow this view (the panel stays closed and says so; it opens on an error).
        "active_filters": sum(1 for key in FILTER_KEYS if key != "ordering" and query.getlist(key)),
        "filter_query": _filter_query(query), "fresh_since": None, "poll_seconds": _poll_seconds(),
        "selected": {key: set(query.getlist(key)) for key in ("status", "temperature", "state")},
        "checked": checked,
    }
    if leads is not None:
        paginator = InboxPagination()
        # Rebuilt on the filters actually applied, so the default view's links carry them.
        api_request = Request(request)
        api_request._request.GET = query
        try:
            rows = paginator.paginate_queryset(leads, api_request)
        except DRFValidationError:
            context["cursor_error"] = _("This page link is no longer valid; here is the first page.")
            query.pop("cursor", None)
            api_request._request.GET = query
            rows = paginator.paginate_queryset(leads, api_request)
        total, exact, counted_at = selectors.lead_count_remembered(leads, user=request.user, filters=query)
        context.update(
            rows=rows, total=total, exact=exact, page_size=paginator.page_size,
            total_age=int(time.time() - counted_at),
            next_url=_relative(paginator.get_next_link()), previous_url=_relative(paginator.get_previous_link()),
        )
        if "cursor" not in query:
            context["fresh_since"] = selectors.lead_list_for(request.user).aggregate(top=Max("id"))["top"] or 0
    context.update(_choices(request.user))
    return render(request, "leads/inbox.html", context)


@login_required
@require_GET
def inbox_fresh(request):
    """Hot leads that arrived in this view since the page was loaded (polled by htmx)."""
    query, _is_default = inbox_filters(request)
    try:
        since = int(request.GET.get("since", ""))
    except ValueError:
        since = None
    fresh = []
    filterset, leads, _unused = _inbox_rows(request, query)
    if leads is not None and since is not None:
        fresh = list(leads.filter(id__gt=since, temperature=Temperature.HOT)[:FRESH_LIMIT])
    return render(request, "leads/_fresh.html", {
        "fresh": fresh, "since": since, "filter_query": _filter_query(query), "poll_seconds": _poll_seconds(),
    })


def filter_errors(errors):
    """A filter form's errors as ``[(label, text)]`` in plain words: the label people see
    next to the filter (none for an error of the whole form or of the view's name)."""
    shown = []
    for field, messages_ in errors.items():
        label = "" if field in ("__all__", "name") else str(FILTER_LABELS.get(field, field))
        shown.append((label, " ".join(str(message) for message in messages_)))
    return shown


def _poll_seconds():
    from django.conf import settings

    return getattr(settings, "FUNIL_INBOX_POLL_SECONDS", 10)


def _filter_query(query):
    """The filters alone as a query string (no cursor), for links and polling."""
    clean = QueryDict(mutable=True)
    for key in FILTER_KEYS:
        values = [value for value in query.getlist(key) if value != ""]
        if values:
            clean.setlist(key, values)
    if "page_size" in query:
        clean["page_size"] = query["page_size"]
    return clean.urlencode()


def _relative(url):
    if not url:
        return None
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


def _choices(user):
    from nurturing.selectors import segments_for

    return {
        "statuses": LeadStatus.choices, "temperatures": Temperature.choices,
        "states": sorted(BRAZIL_STATES.items()), "ordering_choices": ORDERING_CHOICES,
        "sources": Source.objects.order_by("name").values_list("slug", "name"),
        "lead_forms": Form.objects.order_by("name").values_list("slug", "name"),
        "people": selectors.sales_people().order_by("first_name", "username"),
        "page_sizes": PAGE_SIZES,
        "reasons": selectors_reasons(),
        "segments": segments_for(user),
        "sequences": Sequence.objects.filter(active=True).order_by("name").values_list("pk", "name"),
        "can_act": roles.is_sales(user),
        "is_manager": roles.is_manager(user),
    }


def selectors_reasons():
    from .models import Reason

    return Reason.objects.filter(active=True).order_by("label")


def _safe_next(request, fallback):
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                                  require_https=request.is_secure()):
        return target
    return fallback


# --- The lead page ---------------------------------------------------------------------

ACTION_FORMS = {
    "qualify": forms.QualifyForm,
    "disqualify": forms.DisqualifyForm,
    "out_of_focus": forms.OutOfFocusForm,
    "convert": forms.ConvertForm,
    "note": forms.NoteForm,
    "rate": forms.RateForm,
    "assign": forms.AssignForm,
}


def _detail_context(request, lead, bound=None):
    can_work = roles.can_work_lead(request.user, lead)
    action_forms = {name: form_class(prefix=name) for name, form_class in ACTION_FORMS.items()}
    if bound is not None:
        action_forms[bound.prefix] = bound
    if lead.fit:
        action_forms["rate"].initial = {"fit": lead.fit, "note": lead.fit_note}
    explanation = selectors.lead_explanation(lead)
    return {
        "enrollments": list(lead_enrollments(lead)),
        "sequences": list(Sequence.objects.filter(active=True).order_by("name")) if can_work else [],
        "can_handle_personal_data": privacy.can_handle_personal_data(request.user),
        "lead": lead, "events": selectors.lead_timeline_shown(lead), "explanation": explanation,
        "can_work": can_work, "is_manager": roles.is_manager(request.user), "forms": action_forms,
        "open_form": bound.prefix if bound is not None else "",
        "next": _safe_next(request, ""),
    }


@login_required
@require_GET
def lead_detail(request, pk):
    lead = get_object_or_404(selectors.lead_list_for(request.user), pk=pk)
    return render(request, "leads/detail.html", _detail_context(request, lead))


@login_required
@require_POST
def lead_action(request, pk, action):
    """One action on one lead: the form checks the input, one service does the write."""
    lead = get_object_or_404(selectors.lead_list_for(request.user), pk=pk)
    user = request.user
    done = {
        "claim": _("You claimed this lead."), "unclaim": _("You gave this lead back."),
        "qualify": _("Lead qualified."), "disqualify": _("Lead disqualified."),
        "out_of_focus": _("Lead marked out of focus."), "convert": _("Lead converted."),
        "note": _("Note added."), "rate": _("Thank you: your rating was recorded."),
        "assign": _("Lead assigned."),
    }
    if action not in done:
        return render(request, "leads/problem.html", {"message": _("Unknown action.")}, status=404)
    form = None
    if action in ACTION_FORMS:
        form = ACTION_FORMS[action](request.POST, prefix=action)
        if not form.is_valid():
            return render(request, "leads/detail.html", _detail_context(request, lead, bound=form), status=400)
    try:
        result = _run_action(action, lead, user, form)
    except PermissionDenied as exc:
        return render(request, "leads/problem.html", {"message": str(exc) or _("You may not do this."),
                                                      "lead": lead}, status=403)
    except ValidationError as exc:
        form = form or forms.QualifyForm(prefix=action)
        for field, errors in exc.message_dict.items():
            form.add_error(field if field in form.fields else None, errors)
        return render(request, "leads/detail.html", _detail_context(request, lead, bound=form), status=400)
    if result is not None and result.updated_at == lead.updated_at:
        # The service found the lead already so and wrote nothing: say that, not "done".
        messages.info(request, _unchanged_message(action, result))
    else:
        _forget_totals(user)
        messages.success(request, done[action])
    return HttpResponseRedirect(_safe_next(request, lead.get_absolute_url()))


def _unchanged_message(action, lead):
    if action in ("claim", "unclaim", "assign"):
        if lead.owner_id is None:
            return _("Nothing changed: this lead is not assigned to anyone.")
        return _("Nothing changed: this lead is already assigned to %(owner)s.") % {
            "owner": lead.owner.get_full_name() or lead.owner.get_username()}
    return _("Nothing changed: this lead is already “%(status)s”.") % {"status": lead.get_status_display()}


def _forget_totals(user):
    """The person changed leads: the totals their inbox remembers may be off now."""
    transaction.on_commit(lambda: selectors.lead_counts_forget(user))


def _run_action(action, lead, user, form):
    """Run the action's service. Returns the lead as the service left it when the action
    may find nothing to do (its ``updated_at`` then unchanged), else None."""
    data = form.cleaned_data if form is not None else {}
    if action == "claim":
        return services.lead_assign(lead=lead, owner=user, actor=user)
    if action == "unclaim":
        return services.lead_assign(lead=lead, owner=None, actor=user)
    if action == "assign":
        return services.lead_assign(lead=lead, owner=data["owner"], actor=user)
    if action == "qualify":
        return services.lead_change_status(lead=lead, status=LeadStatus.QUALIFIED, actor=user, note=data["note"])
    if action == "disqualify":
        return services.lead_change_status(lead=lead, status=LeadStatus.DISQUALIFIED, actor=user,
                                           **form.service_arguments())
    if action == "out_of_focus":
        return services.lead_change_status(lead=lead, status=LeadStatus.OUT_OF_FOCUS, actor=user,
                                           reason=data["reason"], note=data["note"])
    if action == "convert":
        return services.lead_change_status(lead=lead, status=LeadStatus.CONVERTED, actor=user,
                                           deal_value=data["deal_value"], note=data["note"])
    if action == "note":
        services.lead_add_note(lead=lead, author=user, text=data["text"])
    elif action == "rate":
        services.lead_rate(lead=lead, actor=user, fit=data["fit"], note=data["note"])
    return None


# --- Bulk actions and saved views --------------------------------------------------------


@login_required
@require_POST
def inbox_bulk(request):
    """One action on the selected rows. Each lead goes through the same service as on its
    own page; those the person may not act on are reported, the others done."""
    back = _safe_next(request, reverse("leads:inbox"))
    form = forms.BulkForm(request.POST)
    if not form.is_valid():
        for errors in form.errors.values():
            for error in errors:
                messages.error(request, error)
        chosen = [int(value) for value in request.POST.getlist("leads")[:MAX_PAGE_SIZE] if value.isdigit()]
        return HttpResponseRedirect(_with_selected(back, chosen))
    data = form.cleaned_data
    leads = selectors.lead_list_for(request.user).filter(pk__in=data["leads"])
    if data["action"] in ("enroll", "unenroll"):
        return _bulk_nurture(request, leads, data, back)
    done, unchanged, refused, refused_ids = 0, 0, [], []
    for lead in leads:
        try:
            if data["action"] == "claim":
                result = services.lead_assign(lead=lead, owner=request.user, actor=request.user)
            elif data["action"] == "assign":
                result = services.lead_assign(lead=lead, owner=data["owner"], actor=request.user)
            else:
                status = LeadStatus.DISQUALIFIED if data["action"] == "disqualify" else LeadStatus.OUT_OF_FOCUS
                result = services.lead_change_status(lead=lead, status=status, actor=request.user,
                                                     reason=data["reason"], note=data["note"])
        except (PermissionDenied, ValidationError) as exc:
            text = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
            refused.append(f"{lead}: {text}")
            refused_ids.append(lead.pk)
        else:
            # The service writes nothing for a lead already in that state.
            if result.updated_at == lead.updated_at:
                unchanged += 1
            else:
                done += 1
    if done:
        _forget_totals(request.user)
        messages.success(request, ngettext("%(count)d lead updated.", "%(count)d leads updated.", done)
                         % {"count": done})
    if unchanged:
        messages.info(request, ngettext("%(count)d lead was already in that state: nothing changed.",
                                        "%(count)d leads were already in that state: nothing changed.", unchanged)
                      % {"count": unchanged})
    for line in refused[:10]:
        messages.error(request, line)
    return HttpResponseRedirect(_with_selected(back, refused_ids))


def _with_selected(url, ids):
    """``url`` with the leads ``ids`` to show ticked (the inbox's ``selected``)."""
    if not ids:
        return url
    path, _sep, query = url.partition("?")
    params = QueryDict(query, mutable=True)
    params["selected"] = ",".join(str(pk) for pk in ids)
    return f"{path}?{params.urlencode()}"


def _bulk_nurture(request, leads, data, back):
    """Enroll the selected leads in a sequence, or take them out: nurturing's services,
    one lead at a time, as from the lead page."""
    from nurturing import services as nurturing

    sequence = data["sequence"]
    changed, _unchanged, errors = nurturing.enrollments_by_hand(
        sequence=sequence, leads=leads, actor=request.user, remove=data["action"] == "unenroll"
    )
    done, refused = len(changed), [f"{lead}: {message}" for lead, message in errors.items()]
    if done:
        _forget_totals(request.user)
        # The messages of nurturing's own enroll/remove endpoints, word for word.
        if data["action"] == "enroll":
            text = ngettext("%(count)d lead enrolled in %(sequence)s.",
                            "%(count)d leads enrolled in %(sequence)s.", done)
        else:
            text = ngettext("%(count)d lead removed from %(sequence)s.",
                            "%(count)d leads removed from %(sequence)s.", done)
        messages.success(request, text % {"count": done, "sequence": sequence})
    elif not refused:
        messages.info(request, _("Nothing changed: the leads were already in that state."))
    for line in refused[:10]:
        messages.error(request, line)
    return HttpResponseRedirect(back)


@login_required
@require_POST
def inbox_save_view(request):
    """Save the current filters under a name: a segment, which nurturing and reports reuse."""
    from nurturing.selectors import InvalidSegment
    from nurturing.services import SegmentNameTaken, segment_save

    form = forms.SaveViewForm(request.POST)
    query = QueryDict(request.POST.get("query", ""))
    filters = {key: (values if len(values) > 1 else values[0]) for key, values in query.lists()
               if key in FILTER_KEYS}
    if form.is_valid():
        try:
            segment = segment_save(name=form.cleaned_data["name"], filters=filters, actor=request.user,
                                   shared=form.cleaned_data["shared"])
        except SegmentNameTaken as exc:
            messages.error(request, exc.message)
        except InvalidSegment as exc:
            text = " ".join(f"{label}: {words}" if label else words for label, words in filter_errors(exc.errors))
            messages.error(request, _("This view cannot be saved: %(errors)s") % {"errors": text})
        else:
            messages.success(request, _("View saved as “%(name)s”.") % {"name": segment.name})
            return redirect(f"{reverse('leads:inbox')}?{segment.query_string()}")
    else:
        messages.error(request, _("Give the view a name."))
    return redirect(f"{reverse('leads:inbox')}?{query.urlencode()}")
