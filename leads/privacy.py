"""The lead's rights (LGPD / GDPR): the consent ledger, access (an export of everything
Funil holds about a person), erasure, retention, and the audit of who did which.

Erasure anonymises rather than deletes: the lead row, its timeline and its submissions
stay (so the funnel, the reasons and the rule figures keep counting it) with every
personal field wiped. A keyed hash of the email goes on the suppression list, so if the
person comes back without consenting again, nurturing sends them nothing.

There is one suppression list, nurturing's (``nurturing.models.Suppression``: an
HMAC-SHA256 of the address keyed by SECRET_KEY and its fallbacks), which the email
dispatcher checks before every send. An erased or withdrawn address stays on it until
the person consents again (``nurturing.selectors.is_suppressed``).
"""

from django.contrib.admin.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone
from django.utils.translation import gettext as _

from . import roles
from .models import AuditLog, Consent, Lead, LeadEvent, LeadStatus, Submission, WebhookDelivery
from .normalize import normalize_email

EXPORT_FORMAT_VERSION = 1

# Lead fields that identify or describe the person, wiped on erasure. What stays
# (status, score, temperature, source, form, UTM source/medium/campaign, state, interest,
# budget, deal value, rating, timestamps) is what the reports aggregate.
ERASED_TEXT_FIELDS = (
    "first_name", "last_name", "phone", "company", "job_title", "city", "message", "reason_note", "fit_note",
    "utm_term", "utm_content",
)


# --- Suppression (nurturing's list) --------------------------------------------------------


def email_hash(email):
    """The keyed hash the suppression list stores instead of the address."""
    from nurturing.services import email_hash as nurturing_hash

    return nurturing_hash(_normalised(email))


def _normalised(email):
    try:
        return normalize_email(email)
    except ValueError:
        return (email or "").strip().lower()


def suppression_add(*, email, reason):
    """Suppress ``email`` from now on (``reason``: a nurturing Suppression reason); an
    entry already there restarts its clock, so only later consent lifts it (a bounce or a
    complaint already there stays as it is: consent never lifts those)."""
    from nurturing.services import suppression_renew

    if not email:
        return None
    return suppression_renew(email=_normalised(email), reason=reason)


def is_suppressed(email):
    """Must ``email`` get no marketing email? See ``nurturing.selectors.is_suppressed``."""
    from nurturing.selectors import is_suppressed as suppressed

    return bool(email) and suppressed(_normalised(email))


# --- Audit ---------------------------------------------------------------------------------


def audit_record(*, action, actor=None, via="", lead_ref=None, count=1, detail=None):
    """Note who did what. ``detail`` must not hold personal data (ids and counts only)."""
    return AuditLog.objects.create(
        action=action, actor=actor if actor is not None and actor.is_authenticated else None, via=via,
        lead_ref=lead_ref, count=count, detail=detail or {},
    )


def can_handle_personal_data(user):
    """Exports and erasures: sales managers and superusers."""
    return bool(user and user.is_authenticated and user.is_active and roles.is_manager(user))


def _check(actor):
    if actor is not None and not can_handle_personal_data(actor):
        raise PermissionDenied(_("Only sales managers may export or erase a person's data."))


# --- Consent ledger ------------------------------------------------------------------------


def consent_ledger(lead):
    """Every grant and withdrawal of ``lead``, oldest first."""
    return Consent.objects.filter(lead=lead).select_related("form").order_by("created_at", "id")


@transaction.atomic
def consent_withdraw(*, lead, actor=None, note="", via=""):
    """Record that the person withdrew consent (a request, an unsubscribe), on the
    ledger and the timeline, and suppress their address for marketing email."""
    lead = Lead.objects.select_for_update().get(pk=lead.pk)
    consent = Consent.objects.create(lead=lead, action=Consent.Action.WITHDRAWN, note=note[:255])
    LeadEvent.objects.create(lead=lead, kind=LeadEvent.Kind.CONSENT, actor=actor, data={"action": "withdrawn"})
    if lead.email:  # a new withdrawal restarts the clock: only consent after it counts
        suppression_add(email=lead.email, reason="unsubscribed")
    audit_record(action=AuditLog.Action.CONSENT_WITHDRAWN, actor=actor, via=via, lead_ref=lead.pk)
    return consent


# --- Access --------------------------------------------------------------------------------


def find_lead_by_email(email):
    try:
        normalised = normalize_email(email)
    except ValueError:
        return None
    return Lead.objects.filter(email=normalised).first() if normalised else None


def _value(value):
    if value is None or isinstance(value, (str, int, float, bool, list, dict)):
        return value
    return str(value)


def lead_export_data(lead):
    """Everything Funil holds about the person behind ``lead``, as JSON-ready data:
    their fields, submissions as received, timeline, emails and webhooks sent, consent."""
    lead = Lead.objects.select_related("source", "form", "owner", "reason").get(pk=lead.pk)
    fields = {}
    for field in Lead._meta.concrete_fields:
        value = getattr(lead, field.attname)
        fields[field.name] = _value(value)
    fields["source"] = lead.source.name if lead.source_id else None
    fields["form"] = lead.form.name if lead.form_id else None
    fields["owner"] = lead.owner.get_username() if lead.owner_id else None
    fields["reason"] = lead.reason.label if lead.reason_id else None
    for name in ("status_changed_by", "fit_rated_by"):
        fields.pop(name, None)
    submissions = [
        {"id": str(s.public_id), "form": s.form.slug, "received_at": _value(s.received_at), "payload": s.payload,
         "ip": s.ip, "user_agent": s.user_agent, "referrer": s.referrer, "origin": s.origin,
         "status": s.status}
        for s in Submission.objects.filter(lead=lead).select_related("form").order_by("received_at", "id")
    ]
    events = [
        {"kind": e.kind, "at": _value(e.created_at), "from_status": e.from_status, "to_status": e.to_status,
         "reason": e.reason.label if e.reason_id else None, "note": e.note, "data": e.data}
        for e in LeadEvent.objects.filter(lead=lead).select_related("reason").order_by("created_at", "id")
    ]
    consent = [
        {"action": c.action, "at": _value(c.created_at), "text": c.text, "version": c.version,
         "form": c.form.slug if c.form_id else None, "ip": c.ip, "note": c.note}
        for c in consent_ledger(lead)
    ]
    webhooks = [
        {"event": d.event, "at": _value(d.created_at), "to": d.endpoint.name, "status": d.status}
        for d in WebhookDelivery.objects.filter(lead=lead).select_related("endpoint").order_by("created_at", "id")
    ]
    return {
        "format": EXPORT_FORMAT_VERSION,
        "exported_at": _value(timezone.now()),
        "lead": fields,
        "submissions": submissions,
        "timeline": events,
        "emails": [e for e in events if e["kind"].startswith("email_")] + _nurturing_emails(lead),
        "consent": consent,
        "webhooks": webhooks,
        "suppressed": is_suppressed(lead.email) if lead.email else None,
    }


def _nurturing_emails(lead):
    """Emails the nurturing app sent, when it keeps them (its Delivery rows)."""
    from nurturing.models import Delivery

    rows = []
    for delivery in Delivery.objects.filter(lead=lead).order_by("pk"):
        rows.append({field.name: _value(getattr(delivery, field.attname)) for field in Delivery._meta.concrete_fields})
    return rows


def lead_export(*, lead, actor=None, via=""):
    """The export of ``lead`` for the person it describes, audited."""
    _check(actor)
    data = lead_export_data(lead)
    audit_record(action=AuditLog.Action.EXPORT, actor=actor, via=via, lead_ref=lead.pk)
    return data


# --- Erasure -------------------------------------------------------------------------------


def _erased_lead_values():
    values = {name: "" for name in ERASED_TEXT_FIELDS}
    values.update(email=None, attributes={}, updated_at=timezone.now())
    return values


def _anonymise(lead_ids):
    """Wipe the personal data of ``lead_ids`` (a list or a queryset of ids), set-based:
    a handful of UPDATE statements whatever the number of leads."""
    from nurturing.services import suppressions_renew_bulk

    emails = list(Lead.objects.filter(pk__in=lead_ids, email__isnull=False).values_list("email", flat=True))
    suppressions_renew_bulk(emails=emails, reason="erased")
    changed = Lead.objects.filter(pk__in=lead_ids).update(**_erased_lead_values())
    LeadEvent.objects.filter(lead_id__in=lead_ids).update(note="", data={})
    Submission.objects.filter(lead_id__in=lead_ids).update(
        payload={}, ip=None, user_agent="", referrer="", errors={}, dropped_keys=[], idempotency_key=None,
    )
    Consent.objects.filter(lead_id__in=lead_ids).update(ip=None, note="")
    WebhookDelivery.objects.filter(lead_id__in=lead_ids).update(body="{}", response_body="")
    # Admin's history names the object by its str() (the person's name or email).
    LogEntry.objects.filter(
        content_type=ContentType.objects.get_for_model(Lead), object_id__in=[str(pk) for pk in lead_ids]
    ).update(object_repr=_("erased lead"), change_message="")
    _anonymise_nurturing(lead_ids)
    return changed


def _anonymise_nurturing(lead_ids):
    """Nurturing's stored emails hold the address: wipe it, and end the sequences."""
    from nurturing.services import deliveries_anonymise

    deliveries_anonymise(lead_ids=list(lead_ids))


@transaction.atomic
def lead_erase(*, lead, actor=None, via="", request_note=""):
    """Anonymise the person behind ``lead`` (their right to erasure), suppress their
    address, and log who did it. Safe to repeat."""
    _check(actor)
    lead = Lead.objects.select_for_update().get(pk=lead.pk)
    _anonymise([lead.pk])
    LeadEvent.objects.create(lead=lead, kind=LeadEvent.Kind.UPDATED, actor=actor, data={"erased": True})
    audit_record(action=AuditLog.Action.ERASE, actor=actor, via=via, lead_ref=lead.pk,
                 detail={"note": request_note[:200]} if request_note else {})
    lead.refresh_from_db()
    return lead


# --- Retention -----------------------------------------------------------------------------


def stale_leads(*, older_than_days, now=None):
    """Out-of-focus and disqualified leads with no activity for ``older_than_days``,
    not erased yet. A queryset: counting and purging stay in the database."""
    now = now or timezone.now()
    cutoff = now - timezone.timedelta(days=older_than_days)
    recent_event = LeadEvent.objects.filter(lead=OuterRef("pk"), created_at__gte=cutoff)
    return (
        Lead.objects.filter(status__in=[LeadStatus.OUT_OF_FOCUS, LeadStatus.DISQUALIFIED])
        .filter(Q(last_activity_at__lt=cutoff) | Q(last_activity_at__isnull=True, created_at__lt=cutoff))
        .filter(~Exists(recent_event))
        .exclude(email__isnull=True, first_name="", last_name="", phone="")  # nothing personal left
    )


def leads_purge_stale(*, older_than_days, apply=False, actor=None, via="command", chunk_size=5000, now=None):
    """Anonymise stale leads (see ``stale_leads``), chunk by chunk, each chunk in one
    transaction of a few set-based statements. Without ``apply``, only counts.
    Returns the number of leads (to be) anonymised."""
    if older_than_days < 1:
        raise ValueError(_("--older-than must be at least 1 day."))
    now = now or timezone.now()
    candidates = stale_leads(older_than_days=older_than_days, now=now)
    if not apply:
        return candidates.count()
    total, after = 0, 0
    while True:
        with transaction.atomic():
            batch = list(candidates.filter(pk__gt=after).order_by("pk").values_list("pk", flat=True)[:chunk_size])
            if not batch:
                break
            # Re-check under lock: a lead that became active meanwhile is left alone.
            ids = list(Lead.objects.filter(pk__in=batch).select_for_update(skip_locked=True)
                       .values_list("pk", flat=True))
            ids = list(stale_leads(older_than_days=older_than_days, now=now).filter(pk__in=ids)
                       .values_list("pk", flat=True))
            total += _anonymise(ids) if ids else 0
        after = batch[-1]
    if total:
        audit_record(action=AuditLog.Action.PURGE, actor=actor, via=via, count=total,
                     detail={"older_than_days": older_than_days})
    return total
