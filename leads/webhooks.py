"""Outbound webhooks: tell other systems when a lead is created, qualified, disqualified,
put out of focus or converted.

Each event becomes one ``WebhookDelivery`` row per subscribed endpoint, written in the
transaction of the change (so an event is never lost and never sent for a change that
rolled back); the send is a Celery task enqueued on commit, and a beat sweep finds any
delivery whose message was lost. Delivery is at least once: a receiver de-duplicates by
the ``Funil-Delivery`` header.

Signature: ``Funil-Signature: t=<unix time>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``.
A receiver recomputes it over the raw body and rejects old timestamps (replays).
"""

import hashlib
import hmac
import json
import logging
import time
from datetime import timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from .hotcache import TimedCache

logger = logging.getLogger(__name__)

# Attempts before a delivery is given up, and the wait before each retry (seconds).
RETRY_DELAYS = (10, 60, 300, 1800, 7200)
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1
# An endpoint is paused after this many deliveries in a row failed for good.
PAUSE_AFTER_FAILURES = 5
TIMEOUT_SECONDS = 10
MAX_RESPONSE_KEPT = 2000

STATUS_EVENTS = {
    "qualified": "lead.qualified",
    "disqualified": "lead.disqualified",
    "out_of_focus": "lead.out_of_focus",
    "converted": "lead.converted",
}


def allows_plain_http():
    """http:// to a loopback address is accepted only when developing or testing."""
    return settings.DEBUG or getattr(settings, "FUNIL_WEBHOOKS_ALLOW_HTTP_LOCALHOST", False)


def validate_endpoint(endpoint):
    from .models import WebhookEndpoint

    errors = {}
    parts = urlsplit(endpoint.url or "")
    local = parts.hostname in ("127.0.0.1", "localhost", "::1")
    if parts.scheme != "https" and not (parts.scheme == "http" and local and allows_plain_http()):
        errors["url"] = _("Use an https:// URL.")
    events = endpoint.events
    if not isinstance(events, list) or not events or not all(e in WebhookEndpoint.EVENTS for e in events):
        errors["events"] = _("Give a list of one or more of: %(events)s.") % {
            "events": ", ".join(WebhookEndpoint.EVENTS)}
    if len(endpoint.secret or "") < 16:
        errors["secret"] = _("Use a secret of at least 16 characters.")
    if errors:
        raise ValidationError(errors)


def sign(secret, body, timestamp):
    """The signature header's value for ``body`` (bytes) sent at ``timestamp``."""
    message = f"{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret, body, header, *, tolerance=300, now=None):
    """What a receiver does: True when ``header`` signs ``body`` and is recent."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
    except (ValueError, KeyError):
        return False
    now = int(now if now is not None else time.time())
    if abs(now - timestamp) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, body, timestamp), header)


def lead_payload(lead):
    return {
        "id": lead.pk, "email": lead.email, "first_name": lead.first_name, "last_name": lead.last_name,
        "phone": lead.phone, "company": lead.company, "status": lead.status, "score": lead.score,
        "temperature": lead.temperature, "source": lead.source.slug if lead.source_id else None,
        "form": lead.form.slug if lead.form_id else None, "utm_campaign": lead.utm_campaign,
        "reason": lead.reason.slug if lead.reason_id else None,
        "deal_value": lead.deal_value, "created_at": lead.created_at,
    }


_endpoints = TimedCache()


def active_endpoints():
    """The active endpoints, as this process read them at most ``hotcache.SECONDS`` ago:
    every capture asks, and there are usually none. An endpoint added or resumed gets
    events from that bound on; one paused since keeps getting deliveries written for as
    long, which wait (the sender and the sweep skip inactive endpoints) until it resumes."""
    from .models import WebhookEndpoint

    return _endpoints.get("active", lambda _key: list(WebhookEndpoint.objects.filter(active=True)))


def forget_endpoints():
    """This process's copy goes now and again on commit (a concurrent request may have
    read the old rows meanwhile); other processes follow within the bound."""
    _endpoints.forget()
    transaction.on_commit(_endpoints.forget)


def webhook_event_record(*, lead, event):
    """Write one pending delivery per active endpoint subscribed to ``event``, in the
    caller's transaction, and send them after commit. Returns the deliveries."""
    from .models import WebhookEndpoint

    if event not in WebhookEndpoint.EVENTS:
        return []
    deliveries = _deliveries_write([(lead, event)])
    if deliveries:
        ids = [delivery.pk for delivery in deliveries]
        transaction.on_commit(lambda: _enqueue(ids))
    return deliveries


def webhook_events_record_many(pairs):
    """``webhook_event_record`` for many ``(lead, event)`` pairs at once (a CSV import's
    batch): the deliveries in one bulk INSERT, sent after commit a few per message (the
    sweep finds any message that was lost). The leads need their source, form and
    reason loaded. Returns the number of deliveries written."""
    deliveries = _deliveries_write(pairs)
    if deliveries:
        ids = [delivery.pk for delivery in deliveries]
        transaction.on_commit(lambda: _enqueue_batches(ids))
    return len(deliveries)


def _deliveries_write(pairs):
    """One pending delivery per (lead, event) pair and active endpoint subscribed to the
    event, each with its signed-to-be body, INSERTed together; returned with their ids."""
    from .models import WebhookDelivery

    subscribed = {}
    for endpoint in active_endpoints():
        for event in endpoint.events or []:
            subscribed.setdefault(event, []).append(endpoint)
    if not subscribed:
        return []
    now = timezone.now()
    deliveries = []
    for lead, event in pairs:
        for endpoint in subscribed.get(event, ()):
            delivery = WebhookDelivery(endpoint=endpoint, event=event, lead=lead, next_attempt_at=now)
            delivery.body = json.dumps(
                {"id": str(delivery.public_id), "event": event, "created_at": now, "lead": lead_payload(lead)},
                cls=DjangoJSONEncoder, ensure_ascii=False, sort_keys=True,
            )
            deliveries.append(delivery)
    if not deliveries:
        return []
    WebhookDelivery.objects.bulk_create(deliveries, batch_size=1000)
    if any(delivery.pk is None for delivery in deliveries):  # a database that returns no ids from bulk inserts
        ids = dict(WebhookDelivery.objects.filter(public_id__in=[d.public_id for d in deliveries])
                   .values_list("public_id", "pk"))
        for delivery in deliveries:
            delivery.pk = delivery.id = ids[delivery.public_id]
    return deliveries


def _enqueue(ids):
    from .tasks import deliver_webhook

    for pk in ids:
        try:
            deliver_webhook.delay(pk)
        except Exception:  # noqa: BLE001 - the broker is down: the sweep sends it later
            logger.warning("Could not enqueue webhook delivery %s; the sweep will send it", pk)


def _post(url, body, headers):
    """POST and return (status, text). Raises OSError-like exceptions on network errors."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310 - checked scheme
            return response.status, response.read(MAX_RESPONSE_KEPT).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(MAX_RESPONSE_KEPT).decode("utf-8", "replace")


def webhook_deliver(*, delivery_id, now=None):
    """Attempt one delivery: claim it, POST it signed, record the answer. A failure
    schedules the next attempt with backoff; the last failure fails it for good, and
    enough of those in a row pause the endpoint and tell its owner.

    Returns the delivery's status, or None when another worker holds it or it is not due.
    """
    from .models import WebhookDelivery, WebhookEndpoint

    now = now or timezone.now()
    claimed = WebhookDelivery.objects.filter(
        pk=delivery_id, status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=now,
        endpoint__active=True,
    ).update(status=WebhookDelivery.Status.SENDING, next_attempt_at=now + timedelta(seconds=TIMEOUT_SECONDS * 6))
    if not claimed:
        return None
    delivery = WebhookDelivery.objects.select_related("endpoint").get(pk=delivery_id)
    endpoint = delivery.endpoint
    body = delivery.body.encode()
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json", "User-Agent": "Funil-Webhooks/1",
        "Funil-Event": delivery.event, "Funil-Delivery": str(delivery.public_id),
        "Funil-Signature": sign(endpoint.secret, body, timestamp),
    }
    status_code, text, error = None, "", ""
    try:
        validate_endpoint(endpoint)
        status_code, text = _post(endpoint.url, body, headers)
    except ValidationError as exc:
        error = "; ".join(exc.messages)
    except Exception as exc:  # noqa: BLE001 - any network failure is retried
        error = f"{exc.__class__.__name__}: {exc}"[:1000]
    attempts = delivery.attempts + 1
    ok = status_code is not None and 200 <= status_code < 300
    changes = {"attempts": attempts, "response_status": status_code, "response_body": text[:MAX_RESPONSE_KEPT],
               "error": error}
    if ok:
        changes.update(status=WebhookDelivery.Status.DELIVERED, delivered_at=timezone.now(), next_attempt_at=None)
    elif attempts < MAX_ATTEMPTS:
        changes.update(status=WebhookDelivery.Status.PENDING,
                       next_attempt_at=timezone.now() + timedelta(seconds=RETRY_DELAYS[attempts - 1]))
    else:
        changes.update(status=WebhookDelivery.Status.FAILED, next_attempt_at=None)
    with transaction.atomic():
        WebhookDelivery.objects.filter(pk=delivery.pk).update(**changes)
        if ok:
            WebhookEndpoint.objects.filter(pk=endpoint.pk).update(consecutive_failures=0)
        elif changes["status"] == WebhookDelivery.Status.FAILED:
            _count_failure(endpoint.pk)
    return changes["status"]


def _count_failure(endpoint_id):
    from django.db.models import F

    from .models import WebhookEndpoint

    WebhookEndpoint.objects.filter(pk=endpoint_id).update(consecutive_failures=F("consecutive_failures") + 1)
    paused = WebhookEndpoint.objects.filter(
        pk=endpoint_id, active=True, consecutive_failures__gte=PAUSE_AFTER_FAILURES
    ).update(active=False, paused_at=timezone.now())
    if paused:
        forget_endpoints()
        transaction.on_commit(lambda: _tell_owner(endpoint_id))


def _tell_owner(endpoint_id):
    from django.core.mail import send_mail

    from .models import WebhookEndpoint

    endpoint = WebhookEndpoint.objects.select_related("owner").get(pk=endpoint_id)
    if not endpoint.owner or not endpoint.owner.email:
        logger.warning("Webhook endpoint %s paused; it has no owner with an email", endpoint_id)
        return
    subject = _("Webhook paused: %(name)s") % {"name": endpoint.name}
    body = _(
        "Funil stopped sending events to %(url)s after %(count)s deliveries in a row failed. "
        "Fix the receiver, then tick “active” on the endpoint in admin to resume."
    ) % {"url": endpoint.url, "count": endpoint.consecutive_failures}
    send_mail(subject, body, None, [endpoint.owner.email], fail_silently=True)


def webhook_endpoint_resume(*, endpoint):
    """Reactivate a paused endpoint and give its failed deliveries another round."""
    from .models import WebhookDelivery, WebhookEndpoint

    now = timezone.now()
    with transaction.atomic():
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(active=True, paused_at=None, consecutive_failures=0)
        forget_endpoints()
        ids = list(WebhookDelivery.objects.filter(endpoint=endpoint, status=WebhookDelivery.Status.FAILED)
                   .values_list("pk", flat=True))
        WebhookDelivery.objects.filter(pk__in=ids).update(
            status=WebhookDelivery.Status.PENDING, attempts=0, next_attempt_at=now)
        transaction.on_commit(lambda: _enqueue(ids))
    return len(ids)


def webhook_deliveries_sweep(*, now=None, limit=500):
    """Deliveries that are due (a lost message, a retry whose time has come, a worker that
    died mid-send): attempt each. Returns how many were attempted."""
    from django.db.models import Q

    from .models import WebhookDelivery

    now = now or timezone.now()
    due = list(
        WebhookDelivery.objects.filter(
            Q(status=WebhookDelivery.Status.PENDING) | Q(status=WebhookDelivery.Status.SENDING),
            next_attempt_at__lte=now, endpoint__active=True,
        ).order_by("next_attempt_at").values_list("pk", flat=True)[:limit]
    )
    # A delivery left SENDING past its claim deadline belonged to a dead worker.
    WebhookDelivery.objects.filter(pk__in=due, status=WebhookDelivery.Status.SENDING).update(
        status=WebhookDelivery.Status.PENDING)
    return sum(1 for pk in due if webhook_deliver(delivery_id=pk, now=now) is not None)


# --- Status changes made set-based (rescoring, activation, requalification) ----------------

# Deliveries per Celery message when a chunk of leads changed status at once: a few messages
# per chunk instead of one per lead, so the chunk's commit is not held up by the broker.
BATCH_ENQUEUE = 100


def webhook_status_events_record_for_rescore(*, job_id, first_id, last_id, since):
    """The webhooks of the status changes a rescoring job's chunk just made: one pending
    delivery per (lead moved, endpoint subscribed to its new status), in ONE
    ``INSERT … SELECT`` over the chunk's status events (those of job ``job_id`` for leads
    with ids in (first_id, last_id], written at or after ``since``), in the caller's
    transaction. The payload is the one ``webhook_event_record`` sends for a one-lead
    change. Sending is enqueued on commit, a few deliveries per message; the sweep finds
    any message that was lost. Returns the number of deliveries written."""
    from .models import LeadEvent, WebhookEndpoint

    subscriptions = [
        (endpoint_id, status, event)
        for endpoint_id, events in WebhookEndpoint.objects.filter(active=True).values_list("id", "events")
        for status, event in STATUS_EVENTS.items() if event in (events or [])
    ]
    if not subscriptions:
        return 0
    vendor = connection.vendor
    sql, params = _status_deliveries_sql(vendor, subscriptions)
    envelope_time = json.dumps(timezone.now(), cls=DjangoJSONEncoder).strip('"')
    now = timezone.now()
    kinds = [LeadEvent.Kind.STATUS_CHANGED, LeadEvent.Kind.REQUALIFIED]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, first_id, last_id, since, *kinds, job_id, envelope_time, now, now])
        ids = [row[0] for row in cursor.fetchall()]
    if ids:
        transaction.on_commit(lambda: _enqueue_batches(ids))
    return len(ids)


def _status_deliveries_sql(vendor, subscriptions):
    """The statement (and the parameters of its subscriptions) for
    ``webhook_status_events_record_for_rescore``, in this database's dialect."""
    from .models import Form, Lead, LeadEvent, Reason, Source, WebhookDelivery

    subscribed = " UNION ALL ".join(
        ["SELECT CAST(%s AS INTEGER) AS endpoint_id, CAST(%s AS TEXT) AS to_status, CAST(%s AS TEXT) AS event"]
        * len(subscriptions))
    params = [value for subscription in subscriptions for value in subscription]
    postgres = vendor == "postgresql"
    if postgres:
        json_object, random_id = "jsonb_build_object", "gen_random_uuid()"
        public_id, public_id_text = "x.raw_id", "x.raw_id::text"
        job_matches = "e.data ->> 'job' = CAST(%s AS TEXT)"
        created_at = ("to_char(l.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') || "
                      "CASE WHEN date_part('microseconds', l.created_at)::bigint %% 1000000 <> 0 "
                      "THEN to_char(l.created_at AT TIME ZONE 'UTC', '.MS') ELSE '' END || 'Z'")
        deal_value = "l.deal_value::text"
        body = "CAST({} AS TEXT)"
    else:  # SQLite: a random version-4 UUID made of 32 hex digits, as Django stores it there
        json_object, random_id = "json_object", "lower(hex(randomblob(16)))"
        public_id = "substr(x.raw_id, 1, 12) || '4' || substr(x.raw_id, 14, 3) || 'a' || substr(x.raw_id, 18, 15)"
        public_id_text = ("substr(x.raw_id, 1, 8) || '-' || substr(x.raw_id, 9, 4) || '-4' || "
                          "substr(x.raw_id, 14, 3) || '-a' || substr(x.raw_id, 18, 3) || '-' || "
                          "substr(x.raw_id, 21, 12)")
        job_matches = "json_extract(e.data, '$.job') = %s"
        # Stored as 'YYYY-MM-DD HH:MM:SS[.ffffff]' in UTC; JSON keeps milliseconds, as Django's encoder does.
        created_at = "replace(substr(l.created_at, 1, 23), ' ', 'T') || 'Z'"
        deal_value = "CASE WHEN l.deal_value IS NULL THEN NULL ELSE printf('%%.2f', l.deal_value) END"
        body = "{}"
    lead = (f"{json_object}('id', l.id, 'email', l.email, 'first_name', l.first_name, 'last_name', l.last_name, "
            "'phone', l.phone, 'company', l.company, 'status', l.status, 'score', l.score, "
            "'temperature', l.temperature, 'source', src.slug, 'form', f.slug, 'utm_campaign', l.utm_campaign, "
            f"'reason', r.slug, 'deal_value', {deal_value}, 'created_at', {created_at})")
    # SQLite keeps the CTE's object as text: json() makes it an object again, not a string.
    lead_object = "x.lead" if postgres else "json(x.lead)"
    envelope = body.format(f"{json_object}('id', {public_id_text}, 'event', x.event, "
                           f"'created_at', CAST(%s AS TEXT), 'lead', {lead_object})")
    return f"""
        WITH x AS MATERIALIZED (
            SELECT {random_id} AS raw_id, s.endpoint_id, s.event, l.id AS lead_id, {lead} AS lead
            FROM {LeadEvent._meta.db_table} e
            JOIN {Lead._meta.db_table} l ON l.id = e.lead_id
            JOIN ({subscribed}) s ON s.to_status = e.to_status
            LEFT JOIN {Source._meta.db_table} src ON src.id = l.source_id
            LEFT JOIN {Form._meta.db_table} f ON f.id = l.form_id
            LEFT JOIN {Reason._meta.db_table} r ON r.id = l.reason_id
            WHERE e.lead_id > %s AND e.lead_id <= %s AND e.created_at >= %s AND e.kind IN (%s, %s)
              AND {job_matches} AND e.from_status <> e.to_status
        )
        INSERT INTO {WebhookDelivery._meta.db_table} (public_id, endpoint_id, event, lead_id, body, status, attempts,
                                     response_body, error, next_attempt_at, created_at)
        SELECT {public_id}, x.endpoint_id, x.event, x.lead_id, {envelope}, 'pending', 0, '', '', %s, %s
        FROM x ORDER BY x.lead_id, x.endpoint_id
        RETURNING id
    """, params


def _enqueue_batches(ids):
    from .tasks import deliver_webhooks

    for start in range(0, len(ids), BATCH_ENQUEUE):
        batch = ids[start:start + BATCH_ENQUEUE]
        try:
            deliver_webhooks.delay(batch)
        except Exception:  # noqa: BLE001 - the broker is down: the sweep sends them later
            logger.warning("Could not enqueue %s webhook deliveries; the sweep will send them", len(batch))
