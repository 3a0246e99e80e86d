"""Emails to the sales team about qualification (the requalified leads of a run).

One helper renders ``templates/emails/<name>-subject.txt``, ``-body.txt`` and
``-body.html``; sending happens in a Celery task that receives ids, queued when the
transaction that produced the news commits.
"""

import logging

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.template.loader import render_to_string
from django.utils import translation
from django.utils.translation import gettext as _

from leads.models import LeadEvent

logger = logging.getLogger(__name__)


def send(name, *, to, context):
    """Render the three templates of the email ``name`` and send it to ``to`` (a list)."""
    context = {"base_url": settings.FUNIL_BASE_URL.rstrip("/"), **context}
    subject = " ".join(render_to_string(f"emails/{name}-subject.txt", context).split())
    text = render_to_string(f"emails/{name}-body.txt", context)
    html = render_to_string(f"emails/{name}-body.html", context)
    message = EmailMultiAlternatives(subject, text, to=to)
    message.attach_alternative(html, "text/html")
    message.send()


def requalified_leads_enqueue(*, user_id, event_ids):
    """Queue the email once the current transaction commits (the events it lists are
    then visible to the worker)."""
    from .tasks import send_requalified_leads_email

    def enqueue():
        try:
            send_requalified_leads_email.delay(user_id, list(event_ids))
        except Exception:  # noqa: BLE001 - no broker: better sent late from here than never
            logger.warning("Could not queue the requalification email to user %s; sending it now", user_id)
            requalified_leads_send(user_id=user_id, event_ids=event_ids)

    transaction.on_commit(enqueue)


def requalified_leads_send(*, user_id, event_ids):
    """One email to ``user_id`` listing the leads of these 'requalified' events, each
    with its link and why it qualifies now. Returns False when there is nothing to send."""
    user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    if user is None or not user.email:
        logger.info("Requalification email not sent: user %s is inactive or has no email", user_id)
        return False
    events = list(
        LeadEvent.objects.filter(pk__in=event_ids, kind=LeadEvent.Kind.REQUALIFIED)
        .select_related("lead", "lead__owner").order_by("-lead__score", "lead_id")
    )
    if not events:
        return False
    base_url = settings.FUNIL_BASE_URL.rstrip("/")
    with translation.override(settings.LANGUAGE_CODE):
        leads = [
            {
                "lead": event.lead,
                "url": base_url + event.lead.get_absolute_url(),
                "score": event.data.get("score", event.lead.score),
                "why": explanation_lines(event.data.get("explanation", [])),
                "unassigned": event.lead.owner_id is None,
            }
            for event in events
        ]
        send("requalified-leads", to=[user.email], context={"user": user, "leads": leads, "count": len(leads)})
    return True


def explanation_lines(explanation):
    """The explanation of a verdict as short sentences a salesperson reads."""
    lines = []
    for item in explanation:
        points = item.get("points") or 0
        signed = f"{points:+d}" if points else ""
        if item.get("rule") is None and item.get("name") == "engagement":
            lines.append(_("Recent engagement (form submissions, emails opened or clicked): %(points)s points")
                         % {"points": signed or "0"})
            continue
        seen = item.get("seen")
        line = _("%(name)s: %(field)s %(operator)s %(value)s (the lead has %(seen)s)") % {
            "name": item.get("name", ""), "field": item.get("field", ""), "operator": item.get("operator", ""),
            "value": _value_text(item.get("value")), "seen": _value_text(seen) if seen not in (None, "") else "—",
        }
        lines.append(f"{line} {signed}".strip())
    return lines


def _value_text(value):
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    return "" if value is None else str(value)
