"""The dispatcher: finds due deliveries in the database, claims them, renders, sends
through Django's email backend and records the outcome.

The guarantee is **at most once** per delivery (see docs/architecture.md):

1. claim: ``pending`` → ``claimed`` (a row lock with SKIP LOCKED on PostgreSQL, a
   conditional UPDATE everywhere), committed; nothing has been sent;
2. ``claimed`` → ``sending`` with the Message-ID, committed *before* the SMTP exchange;
3. SMTP answers: ``sending`` → ``sent`` (or back to pending for a 4xx, failed for a 5xx),
   committed in the same transaction that marks the next delivery ``sending``.

If the worker dies in 1–2 the row is ``claimed`` and the sweep puts it back to pending:
it provably never reached the server. If it dies in 2–3 the row stays ``sending`` and
the sweep marks it ``uncertain``: never re-sent automatically, shown in admin with its
Message-ID for a person to resend or mark sent.
"""

import contextlib
import logging
import random
import smtplib
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from django.core.mail import get_connection
from django.db import connection as db_connection
from django.db import transaction
from django.template import TemplateSyntaxError
from django.utils import timezone

from leads.models import Consent, LeadEvent

from .emails import build_message
from .models import Delivery, Enrollment, Sequence, SequenceStep, Suppression
from .selectors import suppressed_hashes

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
BACKOFF_BASE = 60  # seconds; doubles per attempt
BACKOFF_CAP = 6 * 3600


def backoff(attempts, *, rng=random):
    """Seconds to wait before attempt ``attempts + 1``: exponential, capped, with jitter
    (between half and all of the step, so retries of one outage spread out)."""
    step = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** max(0, attempts - 1))
    return step * (0.5 + rng.random() / 2)


class Transient(Exception):
    """The server refused for now (4xx) or could not be reached: the message did not leave."""


class Permanent(Exception):
    """The server refused for good (5xx): retrying cannot help."""

    def __init__(self, message, *, bounced=False):
        super().__init__(message)
        self.bounced = bounced


class Uncertain(Exception):
    """The exchange broke after the message may have been accepted."""


def classify(error):
    """Map an email backend exception to Transient, Permanent or Uncertain."""
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in error.recipients.values()]
        text = "; ".join(f"{code} {msg.decode(errors='replace') if isinstance(msg, bytes) else msg}"
                         for code, msg in error.recipients.values())
        if codes and all(400 <= code < 500 for code in codes):
            return Transient(text)
        return Permanent(text, bounced=True)
    if isinstance(error, smtplib.SMTPResponseException):  # sender refused, data refused, helo...
        text = f"{error.smtp_code} {error.smtp_error.decode(errors='replace') if isinstance(error.smtp_error, bytes) else error.smtp_error}"  # noqa: E501
        return Transient(text) if 400 <= error.smtp_code < 500 else Permanent(text)
    if isinstance(error, smtplib.SMTPConnectError | ConnectionRefusedError | socket.gaierror):
        return Transient(str(error) or error.__class__.__name__)
    try:
        from anymail.exceptions import AnymailAPIError, AnymailInvalidAddress, AnymailRecipientsRefused
    except ImportError:  # pragma: no cover - anymail is a pinned dependency
        AnymailAPIError = AnymailInvalidAddress = AnymailRecipientsRefused = ()  # noqa: N806
    if isinstance(error, AnymailRecipientsRefused | AnymailInvalidAddress):
        return Permanent(str(error), bounced=isinstance(error, AnymailRecipientsRefused))
    if isinstance(error, AnymailAPIError):
        status = getattr(error, "status_code", None)
        if status == 429:
            return Transient(str(error))
        if status is not None and 400 <= status < 500:
            return Permanent(str(error))
    return Uncertain(f"{error.__class__.__name__}: {error}")


@dataclass
class DispatchResult:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    uncertain: int = 0
    skipped: int = 0
    more: bool = False
    errors: list = field(default_factory=list)

    def as_dict(self):
        return {"sent": self.sent, "retried": self.retried, "failed": self.failed, "uncertain": self.uncertain,
                "skipped": self.skipped, "more": self.more}


def open_sequences(now):
    return [sequence.pk for sequence in Sequence.objects.filter(active=True) if sequence.window_open(now)]


def claim_batch(*, now, limit, token):
    """Claim up to ``limit`` due pending deliveries of sequences whose window is open."""
    sequence_ids = open_sequences(now)
    if not sequence_ids:
        return []
    due = Delivery.objects.filter(
        status=Delivery.Status.PENDING, due_at__lte=now, enrollment__sequence_id__in=sequence_ids,
    ).order_by("due_at", "pk")
    with transaction.atomic():
        if db_connection.features.has_select_for_update_skip_locked:
            ids = list(due.select_for_update(skip_locked=True, of=("self",)).values_list("pk", flat=True)[:limit])
        else:
            ids = list(due.values_list("pk", flat=True)[:limit])
        if not ids:
            return []
        Delivery.objects.filter(pk__in=ids, status=Delivery.Status.PENDING).update(
            status=Delivery.Status.CLAIMED, claim_token=token, claimed_at=timezone.now(),
        )
    return list(Delivery.objects.filter(pk__in=ids, claim_token=token, status=Delivery.Status.CLAIMED)
                .select_related("lead", "lead__form", "step__template", "enrollment__sequence").order_by("pk"))


def _consent_missing(deliveries):
    """Lead ids whose form required consent and whose latest consent entry is not a grant."""
    needing = {d.lead_id for d in deliveries if d.lead.form_id and d.lead.form.consent_required}
    if not needing:
        return set()
    latest = {}
    for lead_id, action in (Consent.objects.filter(lead_id__in=needing).order_by("lead_id", "created_at", "pk")
                            .values_list("lead_id", "action")):
        latest[lead_id] = action
    return {lead_id for lead_id in needing if latest.get(lead_id) != Consent.Action.GRANTED}


def _skip_reason(delivery, suppressed, no_consent):
    enrollment = delivery.enrollment
    if enrollment.status != Enrollment.Status.ACTIVE:
        return Delivery.Status.CANCELLED, enrollment.status
    lead = delivery.lead
    if lead.status in enrollment.sequence.exit_statuses():
        return Delivery.Status.CANCELLED, lead.status
    if not lead.email:
        return Delivery.Status.SUPPRESSED, "no_email"
    if lead.email in suppressed:
        return Delivery.Status.SUPPRESSED, "suppressed"
    if lead.pk in no_consent:
        return Delivery.Status.SUPPRESSED, "no_consent"
    return None


def record_sent(delivery, *, now, provider_message_id="", from_status=Delivery.Status.SENDING):
    """``sending`` → ``sent``, the timeline event, and the next step's delivery (or the
    enrollment's completion). Call inside a transaction. False if the row was not ours."""
    updated = Delivery.objects.filter(pk=delivery.pk, status=from_status).update(
        status=Delivery.Status.SENT, sent_at=now, provider_message_id=provider_message_id[:255], last_error="",
    )
    if not updated:
        return False
    LeadEvent.objects.create(
        lead_id=delivery.lead_id, kind=LeadEvent.Kind.EMAIL_SENT,
        data={"delivery": delivery.pk, "sequence": delivery.enrollment.sequence_id,
              "step": delivery.step.position, "template": delivery.step.template_id,
              "message_id": delivery.message_id},
    )
    following = (SequenceStep.objects.filter(sequence_id=delivery.enrollment.sequence_id,
                                             position__gt=delivery.step.position).order_by("position").first())
    if following is None:
        Enrollment.objects.filter(pk=delivery.enrollment_id, status=Enrollment.Status.ACTIVE).update(
            status=Enrollment.Status.COMPLETED, exit_reason="completed", ended_at=now,
        )
    else:
        due = delivery.enrollment.sequence.window_opens_at(now + following.delay)
        Delivery.objects.bulk_create(
            [Delivery(enrollment_id=delivery.enrollment_id, step=following, lead_id=delivery.lead_id, due_at=due)],
            ignore_conflicts=True,
        )
    return True


def _record_outcome(delivery, outcome, *, now, result):
    """Write what the server answered for ``delivery`` (inside the caller's transaction)."""
    kind, detail = outcome
    if kind == "sent":
        if record_sent(delivery, now=now, provider_message_id=detail):
            result.sent += 1
    elif kind == "transient":
        attempts = delivery.attempts + 1
        if attempts >= MAX_ATTEMPTS:
            Delivery.objects.filter(pk=delivery.pk, status=Delivery.Status.SENDING).update(
                status=Delivery.Status.FAILED, attempts=attempts, last_error=f"gave up after {attempts}: {detail}")
            result.failed += 1
        else:
            Delivery.objects.filter(pk=delivery.pk, status=Delivery.Status.SENDING).update(
                status=Delivery.Status.PENDING, attempts=attempts, claim_token="", claimed_at=None,
                due_at=now + timedelta(seconds=backoff(attempts)), last_error=detail)
            result.retried += 1
    elif kind == "permanent":
        Delivery.objects.filter(pk=delivery.pk, status=Delivery.Status.SENDING).update(
            status=Delivery.Status.FAILED, attempts=delivery.attempts + 1, last_error=str(detail))
        result.failed += 1
        if detail.bounced:
            from .services import suppression_add

            suppression_add(email=delivery.lead.email, reason=Suppression.Reason.BOUNCED, note=str(detail)[:255])
    else:  # uncertain
        Delivery.objects.filter(pk=delivery.pk, status=Delivery.Status.SENDING).update(
            status=Delivery.Status.UNCERTAIN, attempts=delivery.attempts + 1, last_error=detail)
        result.uncertain += 1


def _release(deliveries, *, now, error, result):
    """Give claimed deliveries back (the server could not be reached): retry later."""
    for delivery in deliveries:
        attempts = delivery.attempts + 1
        Delivery.objects.filter(pk=delivery.pk, status=Delivery.Status.CLAIMED).update(
            status=Delivery.Status.PENDING, attempts=attempts, claim_token="", claimed_at=None,
            due_at=now + timedelta(seconds=backoff(attempts)), last_error=error)
        result.retried += 1


def send_claimed(deliveries, *, now, result, connection=None):
    """Send deliveries this worker claimed. One commit per message: it records the previous
    message's answer and marks this one ``sending``."""
    suppressed = suppressed_hashes({d.lead.email for d in deliveries if d.lead.email})
    no_consent = _consent_missing(deliveries)
    to_send = []
    with transaction.atomic():
        for delivery in deliveries:
            skip = _skip_reason(delivery, suppressed, no_consent)
            if skip is None:
                to_send.append(delivery)
                continue
            status, reason = skip
            Delivery.objects.filter(pk=delivery.pk, status=Delivery.Status.CLAIMED).update(
                status=status, last_error=reason)
            if delivery.enrollment.status == Enrollment.Status.ACTIVE:
                Enrollment.objects.filter(pk=delivery.enrollment_id, status=Enrollment.Status.ACTIVE).update(
                    status=Enrollment.Status.EXITED, exit_reason=reason, ended_at=now)
            result.skipped += 1
    if not to_send:
        return
    backend = connection or get_connection(fail_silently=False)
    try:
        backend.open()
    except Exception as error:  # noqa: BLE001 - any failure to connect: nothing left, retry later
        logger.warning("email backend unreachable: %s", error)
        with transaction.atomic():
            _release(to_send, now=now, error=f"connect: {error}", result=result)
        return
    previous = None  # (delivery, outcome) not yet written
    try:
        for index, delivery in enumerate(to_send):
            try:
                message, message_id = build_message(
                    template=delivery.step.template, lead=delivery.lead, to=delivery.lead.email,
                    delivery_id=delivery.pk, connection=backend,
                )
            except (TemplateSyntaxError, ValueError, TypeError) as error:
                outcome = ("render", f"template: {error}")
                message = None
            with transaction.atomic():
                if previous is not None:
                    _record_outcome(*previous, now=now, result=result)
                    previous = None
                if message is None:
                    Delivery.objects.filter(pk=delivery.pk, status=Delivery.Status.CLAIMED).update(
                        status=Delivery.Status.FAILED, last_error=outcome[1])
                    result.failed += 1
                    continue
                marked = Delivery.objects.filter(
                    pk=delivery.pk, status=Delivery.Status.CLAIMED, claim_token=delivery.claim_token,
                ).update(status=Delivery.Status.SENDING, message_id=message_id, to_email=delivery.lead.email)
            if not marked:  # swept back while we were slow: someone else owns it now
                continue
            delivery.message_id = message_id
            try:
                backend.send_messages([message])
                status = getattr(message, "anymail_status", None)
                outcome = ("sent", (getattr(status, "message_id", None) or "") if status else "")
            except Exception as error:  # noqa: BLE001 - classified below; the loop goes on
                classified = classify(error)
                outcome = ({Transient: "transient", Permanent: "permanent"}.get(type(classified), "uncertain"),
                           classified if isinstance(classified, Permanent) else str(classified))
                try:
                    backend.close()
                    backend.open()
                except Exception as reconnect_error:  # noqa: BLE001
                    with transaction.atomic():
                        _record_outcome(delivery, outcome, now=now, result=result)
                        _release(to_send[index + 1:], now=now, error=f"connect: {reconnect_error}", result=result)
                    return
            previous = (delivery, outcome)
        if previous is not None:
            with transaction.atomic():
                _record_outcome(*previous, now=now, result=result)
    finally:
        with contextlib.suppress(Exception):
            backend.close()


def dispatch_due(*, now=None, batch_size=100, time_budget=50.0, connection=None):
    """Send what is due at ``now`` (default: the clock), batch by batch, for at most
    ``time_budget`` seconds; ``more`` says whether due work is left."""
    now = now or timezone.now()
    result = DispatchResult()
    started = time.monotonic()
    token = uuid.uuid4().hex
    while True:
        deliveries = claim_batch(now=now, limit=batch_size, token=token)
        if not deliveries:
            break
        send_claimed(deliveries, now=now, result=result, connection=connection)
        if time.monotonic() - started > time_budget:
            result.more = Delivery.objects.filter(status=Delivery.Status.PENDING, due_at__lte=now).exists()
            break
    return result
