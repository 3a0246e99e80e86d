import hashlib
import hmac
import logging
import re
from collections.abc import Mapping
from datetime import timedelta
from email.utils import getaddresses

from django.core import signing
from django.db import IntegrityError, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone
from django.utils.text import slugify
from django.utils.translation import gettext_lazy as _

from leads.models import Lead, LeadEvent

from .emails import html_to_text, mailto_unsubscribe_tokens, read_unsubscribe_token, unsubscribe_mailbox
from .models import Delivery, Enrollment, Segment, Sequence, Suppression, TrackingEvent, WorkerHeartbeat
from .selectors import InvalidSegment, is_suppressed, segment_filterset, segment_leads, suppression_in_force
from .timeline import enrollments_end, enrollments_enrolled_record

logger = logging.getLogger(__name__)


@transaction.atomic
def heartbeat_record(*, name, hostname=""):
    """Note that a worker is alive. Safe to run twice: it only moves the clock."""
    now = timezone.now()
    updated = WorkerHeartbeat.objects.filter(name=name).update(
        last_seen=now, hostname=hostname, beats=F("beats") + 1
    )
    if not updated:
        WorkerHeartbeat.objects.get_or_create(
            name=name, defaults={"last_seen": now, "hostname": hostname, "beats": 1}
        )
    return WorkerHeartbeat.objects.get(name=name)


# Keys of a query string that are not filters (pagination, the page's own state).
NON_FILTER_KEYS = {"cursor", "page", "page_size", "format", "csrfmiddlewaretoken", "save_as"}


class SegmentNameTaken(InvalidSegment):
    """The name is that of a view the person may not replace: someone else's, or one a
    nurture sequence enrolls from. ``errors`` holds the message under ``name``."""

    def __init__(self, message):
        super().__init__({"name": [message]})
        self.message = message


@transaction.atomic
def segment_save(*, name, filters, actor=None, description="", shared=True):
    """Save a view of the lead list under ``name``: creates the segment, or replaces the
    person's own view of that name (``created_by``; no actor: one no person created) when
    no sequence enrolls from it, since its filters decide who gets that sequence's
    emails. A name that a view the person can see already has (a shared one, or a
    sequence's) raises ``SegmentNameTaken``, so that a name never silently overwrites
    another person's view; another person's private view, which this person cannot see,
    does not take the name from them: theirs gets a slug of its own ("name-2").
    ``shared``: whether everyone sees the segment (``selectors.segments_for``); a shared
    one stays shared when replaced. The filters must validate against the lead FilterSet,
    so a segment never holds a filter the list would reject."""
    filters = {
        key: value for key, value in (filters or {}).items() if key not in NON_FILTER_KEYS and value not in ("", [])
    }
    filterset = segment_filterset(filters=filters, user=actor)
    if not filterset.is_valid():
        raise InvalidSegment(filterset.errors)
    slug = slugify(name)[:110]
    if not slug:
        raise InvalidSegment({"name": [_("A view needs a name with at least one letter or digit.")]})
    author = actor if actor is not None and actor.is_authenticated else None
    values = {"name": name.strip(), "filters": filters, "description": description, "shared": shared}
    for _attempt in range(5):
        # Every view saved under this name: its slug, or its slug with a number.
        namesakes = list(Segment.objects.select_for_update().filter(
            Q(slug=slug) | Q(slug__regex=rf"^{re.escape(slug)}-[0-9]+$")).order_by("id"))
        own = next((segment for segment in namesakes
                    if segment.created_by_id == (author.pk if author else None)), None)
        segment = own or next((segment for segment in namesakes if segment.shared), None)
        if segment is not None:
            break
        taken = {segment.slug for segment in namesakes}
        free = next(candidate for number in range(1, len(taken) + 2)
                    if (candidate := slug if number == 1 else f"{slug}-{number}") not in taken)
        try:
            with transaction.atomic():
                return Segment.objects.create(slug=free, created_by=author, **values)
        except IntegrityError:  # saved under the same slug meanwhile: look again
            continue
    else:
        raise SegmentNameTaken(_("Could not save the view now; try again."))
    sequence = segment.sequences.order_by("name").first()
    if sequence is not None:
        raise SegmentNameTaken(
            _("The view “%(name)s” decides who enters the nurture sequence “%(sequence)s”, so it cannot be "
              "replaced from here; choose another name.") % {"name": segment.name, "sequence": sequence.name}
        )
    if segment is not own:
        raise SegmentNameTaken(_("A view named “%(name)s” already exists; choose another name.")
                               % {"name": segment.name})
    values["shared"] = segment.shared or shared
    for field, value in values.items():
        setattr(segment, field, value)
    segment.save()
    return segment


# --- Suppression ----------------------------------------------------------------------

def _suppression_keys():
    from django.conf import settings

    keys = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    return [hashlib.sha256(b"funil.suppression:" + str(key).encode()).digest() for key in keys]


def email_hashes(email):
    """The keyed hashes of ``email`` (HMAC-SHA256), under SECRET_KEY first, then its fallbacks."""
    normalized = (email or "").strip().lower().encode()
    return [hmac.new(key, normalized, hashlib.sha256).hexdigest() for key in _suppression_keys()]


def email_hash(email):
    return email_hashes(email)[0]


@transaction.atomic
def suppression_add(*, email, reason, note="", renew=False):
    """Never send to ``email`` again (until fresh consent, for the reasons consent lifts:
    ``Suppression.LIFTED_BY_CONSENT``). Only a keyed hash is stored, so the address stays
    suppressed after the lead is erased. Stops the sequences of every lead with that
    address. Returns ``(suppression, created)``: ``created`` is True when the address was
    not suppressed until now, either without an entry or with one that fresh consent had
    lifted; that entry is then renewed (this moment, this reason), so that only consent
    given after now lifts it again. An entry in force is kept as it is, so a second call
    (a replay) changes nothing, except that a reason consent does not lift (a bounce, a
    complaint) replaces one it does, never the reverse. ``renew``: an entry in force
    with a reason consent lifts restarts its clock too (``suppression_renew``)."""
    if reason not in Suppression.Reason.values:
        raise ValueError(f"Unknown suppression reason: {reason!r}")
    hashes = email_hashes(email)
    # Locked, so that of two requests at once only one finds the address not suppressed.
    entries = list(Suppression.objects.select_for_update().filter(email_hash__in=hashes).order_by("-created_at"))
    created = False
    if not entries:
        suppression, created = Suppression.objects.get_or_create(
            email_hash=hashes[0], defaults={"reason": reason, "note": note[:255]},
        )
    else:
        suppression = entries[0]
        changes = {}
        if not suppression_in_force(email=email, entries=entries):
            # Lifted by consent given since: suppressed again, from now on.
            changes = {"created_at": timezone.now(), "reason": reason, "note": note[:255]}
            created = True
        elif suppression.reason in Suppression.LIFTED_BY_CONSENT:
            if reason not in Suppression.LIFTED_BY_CONSENT:
                changes = {"reason": reason, "note": note[:255]}
            elif renew:
                changes = {"created_at": timezone.now(), "reason": reason}
        if changes:
            Suppression.objects.filter(pk=suppression.pk).update(**changes)
            for name, value in changes.items():
                setattr(suppression, name, value)
    if email:
        leads = Lead.objects.filter(email__iexact=email.strip())
        enrollments_exit(enrollments=Enrollment.objects.filter(lead__in=leads, status=Enrollment.Status.ACTIVE),
                         reason=reason)
    return suppression, created


def suppression_renew(*, email, reason):
    """Suppress ``email`` from now on: like ``suppression_add``, but an entry in force
    restarts its clock too, so only consent given after this moment lifts it (an erasure
    or a withdrawal). A bounce or a complaint already there stays as it is."""
    suppression, _created = suppression_add(email=email, reason=reason, renew=True)
    return suppression


def suppressions_renew_bulk(*, emails, reason):
    """``suppression_renew`` for many addresses, in three statements (retention purges)."""
    emails = [email for email in emails if email]
    if not emails:
        return
    hashes = [email_hash(email) for email in emails]
    now = timezone.now()
    renewed = Suppression.objects.filter(email_hash__in=hashes)
    if reason in Suppression.LIFTED_BY_CONSENT:  # never turn a bounce or a complaint into what consent lifts
        renewed = renewed.filter(reason__in=Suppression.LIFTED_BY_CONSENT)
    renewed.update(created_at=now, reason=reason)
    Suppression.objects.bulk_create([Suppression(email_hash=digest, reason=reason) for digest in hashes],
                                    ignore_conflicts=True)
    enrollments_exit(enrollments=Enrollment.objects.filter(lead__email__in=emails), reason=reason)


def deliveries_anonymise(*, lead_ids):
    """Erasure: the stored copies of what was sent to these leads lose their address and
    any text that could name the person; the rows stay for the counts."""
    enrollments_exit(enrollments=Enrollment.objects.filter(lead_id__in=lead_ids), reason=Suppression.Reason.ERASED)
    Delivery.objects.filter(lead_id__in=lead_ids).update(to_email="", last_error="")


def _exit_now():
    return timezone.now()


@transaction.atomic
def enrollments_exit(*, enrollments, reason, status=Enrollment.Status.EXITED, now=None, actor=None):
    """End ``enrollments`` (a queryset) and cancel what they had not sent yet, with a
    ``nurture_left`` timeline event each (why: ``reason``). Set-based."""
    now = now or _exit_now()
    ids = list(enrollments.filter(status=Enrollment.Status.ACTIVE).values_list("pk", flat=True))
    ended = enrollments_end(enrollment_ids=ids, status=status, reason=reason, now=now, actor=actor)
    if not ended:
        return 0
    Delivery.objects.filter(enrollment_id__in=ended, status=Delivery.Status.PENDING).update(
        status=Delivery.Status.CANCELLED, last_error=reason,
    )
    return len(ended)


def _lead_event(lead_id, kind, **values):
    return LeadEvent.objects.create(lead_id=lead_id, kind=kind, **values)


# --- Enrollment -----------------------------------------------------------------------

class EnrollmentError(ValueError):
    def __init__(self, message, code):
        super().__init__(message)
        self.message = message
        self.code = code


def _first_step(sequence):
    return sequence.steps.order_by("position").first()


def _first_delivery(enrollment, step, now):
    due = enrollment.sequence.window_opens_at(now + step.delay)
    return Delivery(enrollment=enrollment, step=step, lead_id=enrollment.lead_id, due_at=due)


@transaction.atomic
def enrollment_create(*, sequence, lead, actor=None, now=None):
    """Enroll ``lead`` in ``sequence`` by hand. Returns (enrollment, created): an active
    enrollment is returned as it is. A person may enroll a lead again even where the
    sequence does not allow re-entry; suppressed addresses and leads without email never."""
    from leads.roles import can_work_lead

    if actor is not None and not can_work_lead(actor, lead):
        raise EnrollmentError(_("You may not act on this lead."), "forbidden")
    if not lead.email:
        raise EnrollmentError(_("This lead has no email address."), "no_email")
    if is_suppressed(lead.email):
        raise EnrollmentError(_("This address is suppressed (unsubscribed, bounced, complained or erased)."),
                              "suppressed")
    step = _first_step(sequence)
    if step is None:
        raise EnrollmentError(_("This sequence has no steps yet."), "no_steps")
    existing = Enrollment.objects.filter(sequence=sequence, lead=lead, status=Enrollment.Status.ACTIVE).first()
    if existing:
        return existing, False
    now = now or timezone.now()
    try:
        with transaction.atomic():
            enrollment = Enrollment.objects.create(
                sequence=sequence, lead=lead, enrolled_at=now,
                enrolled_by=actor if actor is not None and actor.is_authenticated else None,
            )
    except IntegrityError:  # enrolled by someone else a moment ago
        return Enrollment.objects.get(sequence=sequence, lead=lead, status=Enrollment.Status.ACTIVE), False
    _first_delivery(enrollment, step, now).save()
    enrollments_enrolled_record(enrollment_ids=[enrollment.pk], now=now, how="hand")
    return enrollment, True


@transaction.atomic
def enrollments_by_hand(*, sequence, leads, actor, remove=False):
    """Enroll ``leads`` in ``sequence`` (or, with ``remove``, take them out), each one
    through ``enrollment_create`` / ``enrollment_remove``, as a person asked from a page,
    the inbox's bulk bar or the API. Returns ``(changed, unchanged, errors)``: the leads
    enrolled (removed), those already so, and ``{lead: message}`` for the refused ones."""
    changed, unchanged, errors = [], [], {}
    for lead in leads:
        try:
            if remove:
                done = enrollment_remove(sequence=sequence, lead=lead, actor=actor)
            else:
                done = enrollment_create(sequence=sequence, lead=lead, actor=actor)[1]
        except EnrollmentError as error:
            errors[lead] = error.message
            continue
        (changed if done else unchanged).append(lead)
    return changed, unchanged, errors


def enrollment_remove(*, sequence, lead, actor=None):
    """Take ``lead`` out of ``sequence`` by hand; nothing more is sent. Returns how many ended (0 or 1)."""
    from leads.roles import can_work_lead

    if actor is not None and not can_work_lead(actor, lead):
        raise EnrollmentError(_("You may not act on this lead."), "forbidden")
    return enrollments_exit(
        enrollments=Enrollment.objects.filter(sequence=sequence, lead=lead),
        reason="removed", status=Enrollment.Status.REMOVED, actor=actor if actor and actor.is_authenticated else None,
    )


def sequence_enroll_entrants(*, sequence, now=None, chunk_size=1000):
    """Enroll the leads that are in the sequence's segment now and not enrolled: one query
    finds them, inserts go in chunks. Leads meeting an exit condition, without email, or
    (without re-entry) enrolled before are left out; suppressed addresses are caught by
    the dispatcher, which holds their keyed hashes. Returns how many were enrolled."""
    if not sequence.active or sequence.segment_id is None:
        return 0
    step = _first_step(sequence)
    if step is None:
        return 0
    now = now or timezone.now()
    candidates = segment_leads(segment=sequence.segment).exclude(email__isnull=True).exclude(email="")
    exits = sequence.exit_statuses()
    if exits:
        candidates = candidates.exclude(status__in=exits)
    previous = Enrollment.objects.filter(sequence=sequence, lead=OuterRef("pk"))
    if sequence.allow_reentry:
        # Again only after the enrollment ended and the lead's status changed since.
        previous = previous.filter(
            Q(ended_at__isnull=True)
            | ~(Q(lead__disqualified_at__gt=F("ended_at")) | Q(lead__qualified_at__gt=F("ended_at"))
                | Q(lead__out_of_focus_at__gt=F("ended_at")) | Q(lead__converted_at__gt=F("ended_at")))
        )
    candidates = candidates.exclude(Exists(previous))
    lead_ids = list(candidates.order_by().values_list("pk", flat=True).distinct())
    due = sequence.window_opens_at(now + step.delay)
    enrolled = 0
    for start in range(0, len(lead_ids), chunk_size):
        chunk = lead_ids[start:start + chunk_size]
        with transaction.atomic():
            Enrollment.objects.bulk_create(
                [Enrollment(sequence=sequence, lead_id=lead_id, enrolled_at=now) for lead_id in chunk],
                ignore_conflicts=True,
            )
            fresh = list(Enrollment.objects.filter(
                sequence=sequence, lead_id__in=chunk, status=Enrollment.Status.ACTIVE, enrolled_at=now,
            ).exclude(deliveries__step=step).values_list("pk", "lead_id"))
            Delivery.objects.bulk_create(
                [Delivery(enrollment_id=pk, step=step, lead_id=lead_id, due_at=due) for pk, lead_id in fresh],
                ignore_conflicts=True,
            )
            enrollments_enrolled_record(enrollment_ids=[pk for pk, _lead_id in fresh], now=now, how="segment")
            enrolled += len(fresh)
    return enrolled


def sequence_exit_finished(*, sequence, now=None):
    """End the active enrollments whose lead now meets an exit condition (set-based)."""
    total = 0
    for status in sequence.exit_statuses():
        total += enrollments_exit(
            enrollments=Enrollment.objects.filter(sequence=sequence, status=Enrollment.Status.ACTIVE,
                                                  lead__status=status),
            reason=status, now=now,
        )
    return total


def enroll_all(*, now=None):
    """The beat job: for every active sequence, end finished enrollments, then enroll entrants."""
    from .locks import job_lock

    results = {}
    with job_lock("nurturing-enroll", ttl=timedelta(minutes=30)):
        for sequence in Sequence.objects.filter(active=True, segment__isnull=False):
            try:
                exited = sequence_exit_finished(sequence=sequence, now=now)
                enrolled = sequence_enroll_entrants(sequence=sequence, now=now)
            except InvalidSegment as error:
                logger.warning("sequence %s: its segment no longer validates: %s", sequence.slug, error)
                continue
            results[sequence.slug] = {"enrolled": enrolled, "exited": exited}
    return results


# --- Stale claims ----------------------------------------------------------------------

CLAIM_TIMEOUT = timedelta(minutes=10)


@transaction.atomic
def deliveries_sweep_stale(*, older_than=CLAIM_TIMEOUT, now=None):
    """Claims that outlived their timeout: ``claimed`` ones (never handed to the email
    backend) go back to pending; ``sending`` ones become ``uncertain``, because the
    message may have left, and are never re-sent without a person's decision."""
    now = now or timezone.now()
    limit = now - older_than
    released = Delivery.objects.filter(status=Delivery.Status.CLAIMED, claimed_at__lte=limit).update(
        status=Delivery.Status.PENDING, claim_token="", claimed_at=None,
    )
    uncertain = Delivery.objects.filter(status=Delivery.Status.SENDING, claimed_at__lte=limit).update(
        status=Delivery.Status.UNCERTAIN, last_error="The worker stopped while handing the message to the server.",
    )
    from .dispatch import record_sent_batch

    unrecorded = list(Delivery.objects.filter(status=Delivery.Status.SENT, recorded=False, claimed_at__lte=limit)
                      .values_list("pk", flat=True)[:10000])
    recorded = record_sent_batch(unrecorded, now=now)
    return {"released": released, "uncertain": uncertain, "recorded": recorded}


@transaction.atomic
def deliveries_resend(*, deliveries, now=None):
    """A person's decision that ``uncertain`` or ``failed`` deliveries did not arrive: send them again."""
    now = now or timezone.now()
    return deliveries.filter(
        status__in=[Delivery.Status.UNCERTAIN, Delivery.Status.FAILED], enrollment__status=Enrollment.Status.ACTIVE,
    ).update(status=Delivery.Status.PENDING, claim_token="", claimed_at=None, due_at=now, attempts=0)


@transaction.atomic
def deliveries_mark_sent(*, deliveries, now=None):
    """A person's decision that ``uncertain`` deliveries did arrive (e.g. seen in the provider's log)."""
    from .dispatch import record_sent_batch

    now = now or timezone.now()
    ids = list(deliveries.filter(status=Delivery.Status.UNCERTAIN).values_list("pk", flat=True))
    Delivery.objects.filter(pk__in=ids, status=Delivery.Status.UNCERTAIN).update(
        status=Delivery.Status.SENT, sent_at=now, last_error="marked sent by a person")
    record_sent_batch(ids, now=now)
    return len(ids)


# --- Unsubscribe and tracking ------------------------------------------------------------

@transaction.atomic
def lead_unsubscribe(*, lead_id, delivery_id=None, how="link"):
    """The person behind ``lead_id`` asked for no more email: suppress the address from
    now on, stop every sequence, note it on the timeline. Also after fresh consent had
    lifted an earlier unsubscribe (``suppression_add`` renews the entry). A second
    request while the address is suppressed changes nothing. Returns whether it did."""
    lead = Lead.objects.filter(pk=lead_id).first()
    if lead is None or not lead.email:
        return False
    _suppression, created = suppression_add(email=lead.email, reason=Suppression.Reason.UNSUBSCRIBED)
    if created:
        _lead_event(lead.pk, LeadEvent.Kind.CONSENT, note=str(_("Unsubscribed from email")),
                    data={"action": "unsubscribed", "channel": "email", "how": how, "delivery": delivery_id})
    return created


# What ``inbound_unsubscribe_apply`` did with a message, for the receiver's log.
INBOUND_UNSUBSCRIBED = "unsubscribed"
INBOUND_UNCHANGED = "unchanged"  # a valid token, but already unsubscribed (a replay) or no such lead
INBOUND_OTHER_MAILBOX = "other mailbox"
INBOUND_NO_TOKEN = "no token"
INBOUND_BAD_TOKEN = "bad token"


def _inbound_recipients(message):
    """Every address the inbound ``message`` was delivered or addressed to, lowercased:
    the envelope recipient the provider reports, and To, Cc, Bcc."""
    headers = [str(value) for name in ("To", "Cc", "Bcc") for value in message.get_all(name, [])]
    addresses = {address for _name, address in getaddresses(headers)}
    addresses.add(getattr(message, "envelope_recipient", None) or "")
    return {address.strip().lower() for address in addresses if address and address.strip()}


def inbound_unsubscribe_apply(*, message):
    """An email sent to the unsubscribe mailbox (List-Unsubscribe's mailto), as anymail
    parsed it (``AnymailInboundMessage``): the signed token of its subject, or of its
    body's first line, unsubscribes through ``lead_unsubscribe`` (``how: mailto``), exactly
    as the one-click POST does. Only a token signed by us counts: the From address is never
    trusted (it is easily forged), so "unsubscribe" from a lead's address without a token
    changes nothing. Messages to another address, or without a valid token, are ignored.
    Returns one of the ``INBOUND_…`` outcomes."""
    if unsubscribe_mailbox().strip().lower() not in _inbound_recipients(message):
        return INBOUND_OTHER_MAILBOX
    text = message.text
    if not (text or "").strip() and message.html:
        text = html_to_text(message.html)
    tokens = mailto_unsubscribe_tokens(subject=message.subject, text=text)
    if not tokens:
        return INBOUND_NO_TOKEN
    for token in tokens:
        try:
            lead_id, delivery_id = read_unsubscribe_token(token)
        except (signing.BadSignature, KeyError, TypeError, ValueError):
            continue
        done = lead_unsubscribe(lead_id=lead_id, delivery_id=delivery_id, how="mailto")
        return INBOUND_UNSUBSCRIBED if done else INBOUND_UNCHANGED
    return INBOUND_BAD_TOKEN


def _delivery_event_data(delivery, **extra):
    return {"delivery": delivery.pk, "sequence": delivery.enrollment.sequence_id, "step": delivery.step.position,
            "template": delivery.step.template_id, **extra}


@transaction.atomic
def delivery_record_open(*, delivery_id):
    """The open pixel was loaded. The first open of a delivery is an engagement event."""
    now = timezone.now()
    if not Delivery.objects.filter(pk=delivery_id, status=Delivery.Status.SENT, opened_at__isnull=True).update(
            opened_at=now):
        return False
    delivery = Delivery.objects.select_related("enrollment", "step").get(pk=delivery_id)
    _lead_event(delivery.lead_id, LeadEvent.Kind.EMAIL_OPENED, data=_delivery_event_data(delivery))
    Lead.objects.filter(pk=delivery.lead_id).update(last_activity_at=now)
    return True


@transaction.atomic
def delivery_record_click(*, delivery_id, url):
    """A tracked link was followed. The first click of a delivery is an engagement event
    (and counts as an open if the pixel was blocked)."""
    now = timezone.now()
    delivery = Delivery.objects.select_related("enrollment", "step").filter(pk=delivery_id).first()
    if delivery is None:
        return False
    if not Delivery.objects.filter(pk=delivery_id, clicked_at__isnull=True).update(clicked_at=now):
        return False
    _lead_event(delivery.lead_id, LeadEvent.Kind.EMAIL_CLICKED, data=_delivery_event_data(delivery, url=url[:500]))
    if Delivery.objects.filter(pk=delivery_id, opened_at__isnull=True).update(opened_at=now):
        _lead_event(delivery.lead_id, LeadEvent.Kind.EMAIL_OPENED, data=_delivery_event_data(delivery, inferred=True))
    Lead.objects.filter(pk=delivery.lead_id).update(last_activity_at=now)
    return True


# --- Provider webhooks (anymail's normalised tracking events) -----------------------------

PROVIDER_SUPPRESSING_EVENTS = {
    "bounced": Suppression.Reason.BOUNCED,
    "rejected": Suppression.Reason.BOUNCED,
    "complained": Suppression.Reason.COMPLAINED,
    "unsubscribed": Suppression.Reason.UNSUBSCRIBED,
}


def _event_key(esp, event):
    raw = event.event_id or f"{event.event_type}|{event.message_id}|{event.recipient}|{event.timestamp}"
    return hashlib.sha256(f"{esp}|{raw}".encode()).hexdigest()


# An SMTP answer in a bounce's text: a basic reply code ("452 …") or an enhanced status
# code ("4.2.2"); the first digit says whether the failure is temporary (4) or permanent (5).
_SMTP_CODE = re.compile(r"(?:^|[\s;:(\[])([45])(?:\d\d(?=[\s-]|$)|\.\d{1,3}\.\d{1,3}\b)")
_SOFT_WORDS = ("soft", "transient", "temporary")
_HARD_WORDS = ("hard", "permanent")
# Keys under which providers name the kind of bounce in their raw event (Postmark "Type":
# "SoftBounce", Mandrill and Brevo "event": "soft_bounce", Amazon SES "bounceType":
# "Transient", MailerSend "type": "activity.soft_bounced", Mailgun "severity": "temporary").
_KIND_KEYS = ("type", "event", "severity", "class")


def bounce_is_soft(event):
    """Is this bounce temporary (a full mailbox, a server down for now), so that the
    address may still work? Anymail normalises soft and hard bounces of several providers
    to the same ``bounced`` event, so this reads the provider's own event first: soft,
    transient or temporary means soft; hard or permanent means hard. When it says neither,
    the receiving server's answer decides: 4xx (or 4.x.x) is soft. Anything else is hard."""
    kinds = _kind_values(getattr(event, "esp_event", None))
    if any(word in value for value in kinds for word in _SOFT_WORDS):
        return True
    if any(word in value for value in kinds for word in _HARD_WORDS):
        return False
    for text in (event.mta_response, event.description):
        match = _SMTP_CODE.search(text or "")
        if match:
            return match.group(1) == "4"
    return False


def _kind_values(raw, depth=0):
    """Lowercased string values of the raw event's kind-like keys, a few levels down."""
    if depth > 3:
        return []
    if isinstance(raw, Mapping):
        values = []
        for key, value in raw.items():
            if isinstance(value, str) and any(part in str(key).lower() for part in _KIND_KEYS):
                values.append(value.lower())
            elif isinstance(value, Mapping | list | tuple):
                values.extend(_kind_values(value, depth + 1))
        return values
    if isinstance(raw, list | tuple):
        return [value for item in raw for value in _kind_values(item, depth + 1)]
    return []


@transaction.atomic
def provider_event_apply(*, esp, event):
    """Apply one normalised anymail tracking event. Hard bounces, rejections, complaints
    and provider unsubscribes suppress the address and stop its sequences, with a note on
    the lead's timeline; a soft bounce (``bounce_is_soft``) is only noted, and its
    sequences go on. A replayed event (same id) changes nothing. Returns True when applied."""
    reason = PROVIDER_SUPPRESSING_EVENTS.get(event.event_type)
    if reason is None or not event.recipient:
        return False
    soft = event.event_type == "bounced" and bounce_is_soft(event)
    delivery = None
    if event.message_id:
        delivery = (Delivery.objects.filter(provider_message_id=event.message_id).first()
                    or Delivery.objects.filter(message_id=event.message_id).first())
    try:
        with transaction.atomic():
            TrackingEvent.objects.create(key=_event_key(esp, event), esp=esp[:50], event_type=event.event_type,
                                         delivery=delivery)
    except IntegrityError:
        return False
    if not soft:
        suppression_add(email=event.recipient, reason=reason, note=f"{esp} {event.event_type}")
    description = (event.description or event.mta_response or "")[:500]
    kind = "soft_bounce" if soft else event.event_type
    note = (_("Email soft bounce (not suppressed): %(detail)s") if soft else _("Email %(event)s: %(detail)s"))
    for lead_id in Lead.objects.filter(email__iexact=event.recipient.strip()).values_list("pk", flat=True):
        _lead_event(lead_id, LeadEvent.Kind.NOTE,
                    note=str(note) % {"event": event.event_type, "detail": description},
                    data={"nurturing": kind, "provider": esp, "delivery": delivery.pk if delivery else None})
    return True
