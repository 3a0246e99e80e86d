"""The dispatcher: finds due deliveries in the database, claims them, renders, sends
through Django's email backend and records the outcome.

The guarantee is **at most once** per delivery (see docs/architecture.md):

1. claim: ``pending`` → ``claimed`` (a row lock with SKIP LOCKED on PostgreSQL, a
   conditional UPDATE everywhere), committed; nothing has been sent;
2. per group of ``FUNIL_NURTURE_SENDING_GROUP`` (20) messages: ``claimed`` → ``sending``
   with their Message-IDs, committed *before* the SMTP exchange;
3. the group goes out over one connection (pipelined by ``nurturing.mail``); the
   answers (``sent``; back to pending for a 4xx or content that never left; failed for
   a 5xx; uncertain for a broken exchange) are committed in the same transaction that
   marks the next group ``sending``; the timeline events and next steps of a batch follow
   in one transaction (``record_sent_batch``; the sweep finishes it if the worker died).

If the worker dies in 1–2 the rows are ``claimed`` and the sweep puts them back to
pending: they provably never reached the server. If it dies in 2–3 up to one group stays
``sending`` and the sweep marks it ``uncertain``: never re-sent automatically, shown in
admin with its Message-IDs for a person to resend or mark sent.
"""

import collections
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
from django.db.models import Case, Value, When
from django.template import TemplateSyntaxError
from django.utils import timezone

from leads.models import Consent, LeadEvent

from .emails import CompiledTemplate, build_message
from .mail import NotSent
from .models import Delivery, Enrollment, Sequence, SequenceStep, Suppression
from .selectors import suppressed_hashes
from .timeline import enrollments_end

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
    if isinstance(error, NotSent):
        return Transient(str(error))
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


def record_sent_batch(delivery_ids, *, now):
    """The bookkeeping of deliveries already marked ``sent``: their ``email_sent``
    timeline events, the next step's delivery (due after its delay, inside the window)
    or the enrollment's completion. Set-based and idempotent (``recorded`` flags what is
    done), so the sweep can finish it for a worker that died after sending."""
    if not delivery_ids:
        return 0
    with transaction.atomic():
        rows = list(Delivery.objects.select_for_update(of=("self",)).filter(
            pk__in=list(delivery_ids), status=Delivery.Status.SENT, recorded=False,
        ).select_related("step", "enrollment__sequence"))
        if not rows:
            return 0
        sequence_ids = {row.enrollment.sequence_id for row in rows}
        steps = collections.defaultdict(list)
        for step in SequenceStep.objects.filter(sequence_id__in=sequence_ids).order_by("position"):
            steps[step.sequence_id].append(step)
        events, following, finished = [], [], []
        for row in rows:
            events.append(LeadEvent(
                lead_id=row.lead_id, kind=LeadEvent.Kind.EMAIL_SENT,
                data={"delivery": row.pk, "sequence": row.enrollment.sequence_id, "step": row.step.position,
                      "template": row.step.template_id, "message_id": row.message_id},
            ))
            later = [step for step in steps[row.enrollment.sequence_id] if step.position > row.step.position]
            if later:
                sent_at = row.sent_at or now
                due = row.enrollment.sequence.window_opens_at(sent_at + later[0].delay)
                following.append(Delivery(enrollment_id=row.enrollment_id, step=later[0], lead_id=row.lead_id,
                                          due_at=due))
            else:
                finished.append(row.enrollment_id)
        LeadEvent.objects.bulk_create(events)
        Delivery.objects.bulk_create(following, ignore_conflicts=True)
        enrollments_end(enrollment_ids=finished, status=Enrollment.Status.COMPLETED, reason="completed", now=now)
        Delivery.objects.filter(pk__in=[row.pk for row in rows]).update(recorded=True)
        return len(rows)


def _record_failure(delivery, outcome, *, now, result):
    """Write a refusal or an unknown outcome for ``delivery`` (still ``sending``)."""
    kind, detail = outcome
    if kind == "transient":
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
    else:  # uncertain: never re-sent by itself
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


def sending_group_size():
    from django.conf import settings

    return max(1, int(getattr(settings, "FUNIL_NURTURE_SENDING_GROUP", 20)))


def _mark_sending(group, *, token):
    """One statement: the group's claimed rows ``sending`` with their Message-IDs and a
    fresh ``claimed_at`` (the sweep then measures the send, not the batch). Returns the
    ids that are still ours (a row swept back while we were slow belongs to someone else)."""
    ids = [delivery.pk for delivery, _message, _message_id in group]
    changed = Delivery.objects.filter(pk__in=ids, status=Delivery.Status.CLAIMED, claim_token=token).update(
        status=Delivery.Status.SENDING, claimed_at=timezone.now(),
        message_id=Case(*[When(pk=delivery.pk, then=Value(message_id)) for delivery, _m, message_id in group]),
        to_email=Case(*[When(pk=delivery.pk, then=Value(delivery.lead.email)) for delivery, _m, _id in group]),
    )
    if changed == len(ids):
        return set(ids)
    wanted = {delivery.pk: message_id for delivery, _message, message_id in group}
    return {pk for pk, message_id in Delivery.objects.filter(pk__in=ids, status=Delivery.Status.SENDING)
            .values_list("pk", "message_id") if wanted[pk] == message_id}


def _write_outcomes(sent, failures, *, now, result):
    """The answers of a sent group: the accepted rows ``sent`` in one statement, each
    refusal or unknown outcome on its own (they are rare)."""
    if sent:
        provider_ids = {delivery.pk: provider_id[:255] for delivery, provider_id in sent if provider_id}
        Delivery.objects.filter(pk__in=[delivery.pk for delivery, _id in sent], status=Delivery.Status.SENDING) \
            .update(status=Delivery.Status.SENT, sent_at=now, last_error="", provider_message_id=(
                Case(*[When(pk=pk, then=Value(value)) for pk, value in provider_ids.items()], default=Value(""))
                if provider_ids else Value("")))
    for delivery, outcome in failures:
        _record_failure(delivery, outcome, now=now, result=result)


def _outcome(error):
    classified = classify(error)
    kind = {Transient: "transient", Permanent: "permanent"}.get(type(classified), "uncertain")
    return kind, (classified if isinstance(classified, Permanent) else str(classified))


def _send_group(backend, messages):
    """One result per message: None (accepted) or the exception. The SMTP backend of
    ``nurturing.mail`` sends the group over one pipelined connection; any other backend
    gets one ``send_messages`` call per message and a reconnect after an error."""
    if hasattr(backend, "send_each"):
        return backend.send_each(messages)
    results = []
    for index, message in enumerate(messages):
        try:
            backend.send_messages([message])
        except Exception as error:  # noqa: BLE001 - classified by the caller
            results.append(error)
            try:
                backend.close()
                backend.open()
            except Exception as reconnect_error:  # noqa: BLE001
                results.extend(NotSent(f"connect: {reconnect_error}") for _ in messages[index + 1:])
                return results
            continue
        results.append(None)
    return results


def _skip(deliveries, *, now, result):
    """Deliveries that must not be sent, grouped: one UPDATE per (status, reason)."""
    groups = collections.defaultdict(list)
    for delivery, (status, reason) in deliveries:
        groups[(status, reason)].append(delivery)
    with transaction.atomic():
        for (status, reason), items in groups.items():
            Delivery.objects.filter(pk__in=[d.pk for d in items], status=Delivery.Status.CLAIMED).update(
                status=status, last_error=reason)
            enrollments_end(enrollment_ids=[d.enrollment_id for d in items], status=Enrollment.Status.EXITED,
                            reason=reason, now=now)
            result.skipped += len(items)


def send_claimed(deliveries, *, now, result, connection=None, token=None):
    """Send deliveries this worker claimed, a group (``FUNIL_NURTURE_SENDING_GROUP``) at a
    time: one commit marks the group ``sending`` (and the previous group's answers), then
    the group goes out over one connection; the rest of the bookkeeping is set-based per
    batch (``record_sent_batch``)."""
    suppressed = suppressed_hashes({d.lead.email for d in deliveries if d.lead.email})
    no_consent = _consent_missing(deliveries)
    to_send, skipped = [], []
    for delivery in deliveries:
        skip = _skip_reason(delivery, suppressed, no_consent)
        (to_send.append(delivery) if skip is None else skipped.append((delivery, skip)))
    if skipped:
        _skip(skipped, now=now, result=result)
    if not to_send:
        return
    token = token or to_send[0].claim_token
    backend = connection or get_connection(fail_silently=False)
    try:
        backend.open()
    except Exception as error:  # noqa: BLE001 - any failure to connect: nothing left, retry later
        logger.warning("email backend unreachable: %s", error)
        with transaction.atomic():
            _release(to_send, now=now, error=f"connect: {error}", result=result)
        return
    size = sending_group_size()
    compiled = {}  # step id -> CompiledTemplate: each template compiled once per batch
    answered = None  # (sent, failures) of the last group: accepted or refused, not yet written
    sent_ids = []
    relaxed = _relax_commits()
    try:
        for start in range(0, len(to_send), size):
            group = []
            for delivery in to_send[start:start + size]:
                try:
                    if delivery.step_id not in compiled:
                        compiled[delivery.step_id] = CompiledTemplate(delivery.step.template)
                    message, message_id = build_message(
                        template=delivery.step.template, lead=delivery.lead, to=delivery.lead.email,
                        delivery_id=delivery.pk, connection=backend, compiled=compiled[delivery.step_id],
                    )
                except (TemplateSyntaxError, ValueError, TypeError) as error:
                    compiled.pop(delivery.step_id, None)
                    Delivery.objects.filter(pk=delivery.pk, status=Delivery.Status.CLAIMED).update(
                        status=Delivery.Status.FAILED, last_error=f"template: {error}")
                    result.failed += 1
                    continue
                group.append((delivery, message, message_id))
            with transaction.atomic():  # one commit: the last group's answers, this group 'sending'
                if answered is not None:
                    _write_outcomes(*answered, now=now, result=result)
                    answered = None
                ours = _mark_sending(group, token=token) if group else set()
            group = [item for item in group if item[0].pk in ours]
            if not group:
                continue
            outcomes = _send_group(backend, [message for _delivery, message, _id in group])
            sent, failures = [], []
            for (delivery, message, message_id), error in zip(group, outcomes, strict=True):
                delivery.message_id = message_id
                if error is None:
                    status = getattr(message, "anymail_status", None)
                    sent.append((delivery, (getattr(status, "message_id", None) or "") if status else ""))
                    sent_ids.append(delivery.pk)
                    result.sent += 1
                else:
                    failures.append((delivery, _outcome(error)))
            answered = (sent, failures)
        with transaction.atomic():  # the last answers and the batch's bookkeeping: one commit
            if answered is not None:
                _write_outcomes(*answered, now=now, result=result)
                answered = None
            record_sent_batch(sent_ids, now=now)
        sent_ids = []
    finally:
        with contextlib.suppress(Exception):
            backend.close()
        if answered is not None:  # an error between the answers and their write: 'sending' -> uncertain later
            logger.error("deliveries %s were answered but not recorded", [d.pk for d, _ in answered[0]])
        if sent_ids:  # left by an error: what was written 'sent' gets its bookkeeping now (or from the sweep)
            record_sent_batch(sent_ids, now=now)
        if relaxed:
            with db_connection.cursor() as cursor:
                cursor.execute("RESET synchronous_commit")


def _relax_commits():
    """With FUNIL_NURTURE_ASYNC_COMMIT on PostgreSQL, this session's commits return before
    their WAL is flushed (``synchronous_commit = off``). A dead *worker* loses nothing
    (the server has the commit); a crashed *database server* may lose its last ~0.6 s of
    commits, and a 'sending' mark lost that way can lead to one resend. See docs/architecture.md."""
    from django.conf import settings

    if not getattr(settings, "FUNIL_NURTURE_ASYNC_COMMIT", False) or db_connection.vendor != "postgresql":
        return False
    if db_connection.in_atomic_block:
        return False
    with db_connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit = off")
    return True


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
