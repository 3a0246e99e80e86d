"""Assignment of newly qualified leads to reps, by the rules sales managers edit in admin.

``leads_auto_assign`` is the one entry point. It is called in the transaction that
moves leads to *qualified*: at capture (``services.lead_capture``), when a person or
the rules qualify one lead (``services.lead_change_status``, ``scoring.services.lead_qualify``)
and in every chunk of a rescoring or requalification job. Each assignment writes an
``assigned`` event; the reps are emailed once the transaction commits.
"""

import logging

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.db.models import Count
from django.template.loader import render_to_string
from django.utils import timezone, translation

from . import roles
from .models import AssignmentRule, Lead, LeadEvent, LeadStatus

logger = logging.getLogger(__name__)


def _rotation(rule, reps_by_rule):
    """The rule's reps in a fixed order (by id), starting after the last one served."""
    reps = reps_by_rule[rule.pk]
    if rule.last_assigned_id in [rep.pk for rep in reps]:
        index = [rep.pk for rep in reps].index(rule.last_assigned_id) + 1
        reps = reps[index:] + reps[:index]
    return reps


def _sales_reps():
    return list(
        get_user_model().objects.filter(is_active=True, groups__name=roles.SALES).distinct().order_by("id")
    )


@transaction.atomic
def leads_auto_assign(*, lead_ids, now=None):
    """Give each of these leads that is qualified and unassigned to a rep, by the
    active assignment rules. Returns ``{lead_id: user}`` for the leads assigned.

    The rules are locked while they rotate, so concurrent qualifications never give two
    leads the same turn nor pass a rep's cap. Costs a few queries per call, not per lead.
    """
    lead_ids = list(lead_ids)
    if not lead_ids:
        return {}
    rules = list(AssignmentRule.objects.filter(active=True).select_for_update().order_by("order", "id"))
    if not rules:
        return {}
    leads = list(
        Lead.objects.select_for_update(of=("self",))
        .filter(pk__in=lead_ids, status=LeadStatus.QUALIFIED, owner__isnull=True).order_by("-score", "id")
    )
    if not leads:
        return {}
    everyone = None
    reps_by_rule = {}
    for rule in rules:
        chosen = list(rule.reps.all().order_by("id"))
        if not chosen:
            everyone = _sales_reps() if everyone is None else everyone
            chosen = everyone
        reps_by_rule[rule.pk] = [user for user in chosen if user.is_active]
    all_reps = {rep.pk for reps in reps_by_rule.values() for rep in reps}
    open_counts = dict(
        Lead.objects.filter(owner_id__in=all_reps, status=LeadStatus.QUALIFIED)
        .values_list("owner_id").annotate(count=Count("id")).order_by()
    )
    now = now or timezone.now()
    assigned, events, moved_rules = {}, [], set()
    for lead in leads:
        for rule in rules:
            if not rule.matches(lead):
                continue
            rep = next(
                (rep for rep in _rotation(rule, reps_by_rule)
                 if rule.max_open_leads is None or open_counts.get(rep.pk, 0) < rule.max_open_leads),
                None,
            )
            if rep is None:
                continue  # everyone in this territory is full: the next rule may place it
            assigned[lead.pk] = rep
            open_counts[rep.pk] = open_counts.get(rep.pk, 0) + 1
            rule.last_assigned_id = rep.pk
            moved_rules.add(rule)
            events.append(LeadEvent(
                lead_id=lead.pk, kind=LeadEvent.Kind.ASSIGNED,
                data={"from": None, "to": rep.get_username(), "rule": rule.pk, "rule_name": rule.name},
            ))
            break
    by_rep = {}
    for lead_id, rep in assigned.items():
        by_rep.setdefault(rep.pk, []).append(lead_id)
    for rep_id, ids in by_rep.items():
        Lead.objects.filter(pk__in=ids).update(owner_id=rep_id, updated_at=now)
    LeadEvent.objects.bulk_create(events)
    for rule in moved_rules:
        AssignmentRule.objects.filter(pk=rule.pk).update(last_assigned_id=rule.last_assigned_id)
    for rep_id, ids in by_rep.items():
        transaction.on_commit(lambda rep_id=rep_id, ids=ids: assigned_leads_enqueue(user_id=rep_id, lead_ids=ids))
    return assigned


def assigned_leads_enqueue(*, user_id, lead_ids):
    from .tasks import send_assigned_leads_email

    try:
        send_assigned_leads_email.delay(user_id, list(lead_ids))
    except Exception:  # noqa: BLE001 - no broker: better sent now than never
        logger.warning("Could not queue the assignment email to user %s; sending it now", user_id)
        assigned_leads_send(user_id=user_id, lead_ids=lead_ids)


def assigned_leads_send(*, user_id, lead_ids):
    """One email to the rep listing the leads just given to them (those still theirs)."""
    user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    if user is None or not user.email:
        return False
    leads = list(Lead.objects.filter(pk__in=lead_ids, owner_id=user_id).order_by("-score", "id"))
    if not leads:
        return False
    base_url = settings.FUNIL_BASE_URL.rstrip("/")
    with translation.override(settings.LANGUAGE_CODE):
        context = {"user": user, "count": len(leads), "base_url": base_url,
                   "leads": [{"lead": lead, "url": base_url + lead.get_absolute_url()} for lead in leads]}
        subject = " ".join(render_to_string("emails/leads-assigned-subject.txt", context).split())
        message = EmailMultiAlternatives(subject, render_to_string("emails/leads-assigned-body.txt", context),
                                         to=[user.email])
        message.attach_alternative(render_to_string("emails/leads-assigned-body.html", context), "text/html")
        message.send()
    return True
