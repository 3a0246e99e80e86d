"""Every write to a lead. Each service changes the row and writes its timeline event
in one transaction; side effects are enqueued on commit.

Views, serializers, admin actions, management commands and tasks call these; nothing
else saves a Lead.
"""

import logging

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from config.db import execute_prepared

from . import hotcache, roles
from .capture import clean_lead_data
from .models import Consent, Fit, Form, Lead, LeadEvent, LeadStatus, Reason, StatusSetBy, Submission

logger = logging.getLogger(__name__)

# Fields a person or an integration may write directly (contact and profile data).
CONTACT_FIELDS = (
    "email", "first_name", "last_name", "phone", "company", "job_title", "company_size",
    "country", "state", "city", "interest", "budget", "budget_currency", "message",
    "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content",
)
STATUS_TIMESTAMP = {
    LeadStatus.QUALIFIED: "qualified_at",
    LeadStatus.DISQUALIFIED: "disqualified_at",
    LeadStatus.OUT_OF_FOCUS: "out_of_focus_at",
    LeadStatus.CONVERTED: "converted_at",
}
STATUSES_WITH_REASON = (LeadStatus.DISQUALIFIED, LeadStatus.OUT_OF_FOCUS)
_UNREAD = object()  # "the caller did not read the active ruleset's id"


def _check_actor(actor, lead):
    if actor is not None and not roles.can_work_lead(actor, lead):
        raise PermissionDenied(_("You may act only on your own leads and unassigned ones."))


def _locked(lead):
    """Re-read the row under a lock so concurrent changes serialise."""
    return Lead.objects.select_for_update().get(pk=lead.pk)


def _event(lead, kind, *, actor=None, **values):
    return LeadEvent.objects.create(lead=lead, kind=kind, actor=actor, **values)


def _touch(lead, actor, now):
    """A person's first action on a lead after it was qualified: the time to first touch.
    Returns the field to save, if any."""
    if actor is not None and lead.qualified_at is not None and lead.first_touched_at is None:
        lead.first_touched_at = now
        return ["first_touched_at"]
    return []


def _auto_assign(lead):
    from .assignment import leads_auto_assign

    assigned = leads_auto_assign(lead_ids=[lead.pk])
    if lead.pk in assigned:
        lead.owner = assigned[lead.pk]


@transaction.atomic
def lead_create(*, actor=None, source=None, form=None, attributes=None, event_data=None, **fields):
    """Create a lead from already-normalised fields and write its 'captured' event."""
    unknown = set(fields) - set(CONTACT_FIELDS)
    if unknown:
        raise TypeError(f"lead_create() got unknown fields: {sorted(unknown)}")
    now = timezone.now()
    lead = Lead.objects.create(
        source=source, form=form, attributes=attributes or {}, last_activity_at=now, **fields
    )
    _event(lead, LeadEvent.Kind.CAPTURED, actor=actor, data=event_data or {})
    _webhook(lead, "lead.created")
    return lead


@transaction.atomic
def lead_update_contact(*, lead, actor=None, fields):
    """Change contact and profile fields; the event lists what changed, from and to."""
    unknown = set(fields) - set(CONTACT_FIELDS)
    if unknown:
        raise ValidationError({name: _("This field cannot be changed here.") for name in unknown})
    lead = _locked(lead)
    _check_actor(actor, lead)
    changes = {}
    for name, value in fields.items():
        old = getattr(lead, name)
        if old != value:
            changes[name] = [_jsonable(old), _jsonable(value)]
            setattr(lead, name, value)
    if changes:
        lead.save(update_fields=[*changes, "updated_at"])
        _event(lead, LeadEvent.Kind.UPDATED, actor=actor, data={"changes": changes})
        _qualify(lead)
    return lead


@transaction.atomic
def lead_change_status(*, lead, status, actor=None, reason=None, note="", requalify_at=None, deal_value=None):
    """Move a lead to ``status``. With an ``actor`` the decision is a person's, and the
    rules will not overwrite it; without one, the rules made it.

    Disqualified and out-of-focus need a reason that applies to that status.
    """
    if status not in LeadStatus.values or status == LeadStatus.NEW:
        raise ValidationError({"status": _("A lead cannot be moved to this status.")})
    if status in STATUSES_WITH_REASON:
        if reason is None:
            raise ValidationError({"reason": _("Choose a reason.")})
        if not isinstance(reason, Reason):
            reason = Reason.objects.filter(slug=reason, active=True).first()
            if reason is None:
                raise ValidationError({"reason": _("Unknown reason.")})
        if not reason.applies_to(status):
            raise ValidationError({"reason": _("This reason does not apply to this status.")})
    else:
        reason = None
    lead = _locked(lead)
    _check_actor(actor, lead)
    if lead.status == status and lead.reason_id == (reason.pk if reason else None) and not note:
        return lead

    now = timezone.now()
    old_status = lead.status
    lead.status = status
    lead.status_set_by = StatusSetBy.PERSON if actor else StatusSetBy.RULES
    lead.status_changed_by = actor
    lead.reason = reason
    lead.reason_note = note if status in STATUSES_WITH_REASON else ""
    lead.requalify_at = requalify_at if status == LeadStatus.DISQUALIFIED else None
    if status in STATUS_TIMESTAMP:
        setattr(lead, STATUS_TIMESTAMP[status], now)
    if status == LeadStatus.CONVERTED and deal_value is not None:
        lead.deal_value = deal_value
    lead.last_activity_at = now
    _touch(lead, actor, now)
    lead.save()
    _event(
        lead, LeadEvent.Kind.STATUS_CHANGED, actor=actor, from_status=old_status, to_status=status,
        reason=reason, note=note,
        data={
            "set_by": lead.status_set_by,
            **({"requalify_at": requalify_at.isoformat()} if lead.requalify_at else {}),
            **({"deal_value": str(deal_value)} if deal_value is not None else {}),
        },
    )
    if status == LeadStatus.QUALIFIED and old_status != status and lead.owner_id is None:
        _auto_assign(lead)
    if status != old_status:
        _webhook(lead, status)
    return lead


@transaction.atomic
def lead_assign(*, lead, owner, actor=None):
    """Give the lead to ``owner`` (None: unassign). A rep may only claim for themself."""
    lead = _locked(lead)
    _check_actor(actor, lead)
    if actor is not None and not roles.is_manager(actor) and owner not in (None, actor):
        raise PermissionDenied(_("Only sales managers can assign leads to someone else."))
    if lead.owner_id == (owner.pk if owner else None):
        return lead
    previous = lead.owner
    lead.owner = owner
    touched = _touch(lead, actor, timezone.now())
    lead.save(update_fields=["owner", "updated_at", *touched])
    _event(
        lead, LeadEvent.Kind.ASSIGNED, actor=actor,
        data={
            "from": previous.get_username() if previous else None,
            "to": owner.get_username() if owner else None,
        },
    )
    return lead


@transaction.atomic
def lead_add_note(*, lead, author, text):
    text = (text or "").strip()
    if not text:
        raise ValidationError({"text": _("Write something.")})
    lead = _locked(lead)
    _check_actor(author, lead)
    lead.last_activity_at = timezone.now()
    touched = _touch(lead, author, lead.last_activity_at)
    lead.save(update_fields=["last_activity_at", "updated_at", *touched])
    return _event(lead, LeadEvent.Kind.NOTE, actor=author, note=text)


@transaction.atomic
def lead_rate(*, lead, actor, fit, note=""):
    """A rep's verdict on the lead's quality: good fit, or bad fit with a reason.

    The event keeps the rules that let the lead through (those of its latest
    explanation), so marketing reads the feedback next to them."""
    from . import selectors

    note = (note or "").strip()
    if fit not in Fit.values:
        raise ValidationError({"fit": _("Choose good fit or bad fit.")})
    if fit == Fit.BAD and not note:
        raise ValidationError({"note": _("Say why the lead is a bad fit.")})
    lead = _locked(lead)
    _check_actor(actor, lead)
    now = timezone.now()
    previous = lead.fit
    lead.fit, lead.fit_note, lead.fit_rated_by, lead.fit_rated_at = fit, note, actor, now
    touched = _touch(lead, actor, now)
    lead.save(update_fields=["fit", "fit_note", "fit_rated_by", "fit_rated_at", "updated_at", *touched])
    explanation = selectors.lead_stored_explanation(lead)
    rules = [item["rule"] for item in (explanation or {}).get("explanation", []) if item.get("rule")]
    _event(lead, LeadEvent.Kind.RATED, actor=actor, note=note,
           data={"fit": fit, "from": previous, "rules": rules})
    return lead


def _jsonable(value):
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


@transaction.atomic
def lead_record_score(*, lead, score, temperature, explanation=None):
    """Store the score and temperature the rules computed, with their explanation."""
    lead = _locked(lead)
    if lead.score == score and lead.temperature == temperature:
        return lead
    old = {"score": lead.score, "temperature": lead.temperature}
    lead.score = score
    lead.temperature = temperature
    lead.save(update_fields=["score", "temperature", "updated_at"])
    _event(
        lead, LeadEvent.Kind.SCORED,
        data={"from": old, "score": score, "temperature": temperature, "explanation": explanation or []},
    )
    return lead


# --- Capture ------------------------------------------------------------------------

# Fields a later submission may fill when the lead has them empty. It never overwrites.
MERGEABLE_FIELDS = tuple(name for name in CONTACT_FIELDS if name not in ("email", "budget_currency"))


def _find_for_update(fields):
    """The lead this data belongs to, locked: by email, or by phone when there is no email."""
    if fields.get("email"):
        return Lead.objects.select_for_update().filter(email=fields["email"]).first()
    if fields.get("phone"):
        return Lead.objects.select_for_update().filter(phone=fields["phone"]).order_by("id").first()
    return None


@transaction.atomic
def lead_capture(*, clean, form=None, source=None, submission=None, actor=None, ip=None, submission_changes=None,
                 ruleset_id=_UNREAD):
    """Create the lead a submission describes, or merge it into the lead that already
    has its email (or its phone, when there is no email).

    Merging fills empty fields and custom attributes and counts as activity; it never
    erases or overwrites what is there. Safe under concurrency: parallel captures of
    one email leave one lead. ``ruleset_id``: the active ruleset's id as this
    transaction read it (``scoring.services.active_ruleset_id``), read here when not
    given. Returns ``(lead, created)``.
    """
    return _lead_capture(clean=clean, form=form, source=source, submission=submission, actor=actor, ip=ip,
                         submission_changes=submission_changes, ruleset_id=ruleset_id)


class _Savepoint:
    """A savepoint opened by hand, so that its SAVEPOINT travels in one round trip with
    the statement after it; never released (the commit ends it)."""

    name = "funil_capture"

    def __init__(self):
        self.opened = False

    def prefix(self):
        """SQL to put before the next statement: opens the savepoint with it."""
        if self.opened:
            return ""
        self.opened = True
        return f"SAVEPOINT {self.name}; "

    def open(self):
        if not self.opened:
            self.opened = True
            with connection.cursor() as cursor:
                cursor.execute(f"SAVEPOINT {self.name}")

    def rollback(self):
        if self.opened:
            with connection.cursor() as cursor:
                cursor.execute(f"ROLLBACK TO SAVEPOINT {self.name}")


def _lead_capture(*, clean, form=None, source=None, submission=None, actor=None, ip=None, submission_changes=None,
                  ruleset_id=_UNREAD, savepoint=None):
    """``lead_capture``'s work, in the caller's transaction. With ``savepoint`` (a
    ``_Savepoint``, PostgreSQL), every write of this function happens after it."""
    from scoring.services import active_ruleset_current, active_ruleset_id

    if ruleset_id is _UNREAD:
        ruleset_id = active_ruleset_id()
    if savepoint is not None and not active_ruleset_current(ruleset_id):
        savepoint.open()  # reading the new ruleset is this function's first statement
    source = source or (form.source if form else None)
    fields = {name: value for name, value in clean.fields.items() if name in CONTACT_FIELDS}
    now = timezone.now()
    consent = clean.consent and form is not None
    context = {
        **({"form": form.slug} if form else {}),
        **({"submission": str(submission.public_id)} if submission else {}),
        **({"consent": form.consent_version} if consent else {}),
    }
    new_lead = Lead(source=source, form=form, attributes=dict(clean.attributes), last_activity_at=now, **fields)
    scored = _score_new(new_lead, now, ruleset_id)

    def consent_row(lead):
        return Consent(lead=lead, action=Consent.Action.GRANTED, form=form, submission=submission,
                       text=form.consent_text, version=form.consent_version, ip=ip)

    def processed(lead, created):
        # Marked processed in the same transaction as the lead it produced.
        return None if submission is None else (submission, {
            "processed_at": now, "attempts": submission.attempts + 1, **(submission_changes or {}),
            "status": Submission.Status.PROCESSED, "lead": lead, "created_lead": created, "errors": {},
        })

    created = False
    lead = None
    postgres = connection.vendor == "postgresql"
    if postgres and fields.get("email"):
        # Most submissions are new people: one statement inserts the lead unless its
        # email exists and, only if it was inserted, its events, its consent and the
        # submission's status (one round trip). A conflict on the email means the lead
        # exists: nothing was written, and it is merged below.
        rows = [*_created_events(new_lead, scored, context, actor), *([consent_row(new_lead)] if consent else [])]
        created = _insert_with_rows(new_lead, rows, update=processed(new_lead, True),
                                    prefix=savepoint.prefix() if savepoint else "")
        lead = new_lead if created else None
    if savepoint is not None:
        savepoint.open()
    if lead is None:
        lead = _find_for_update(fields)
    written = created
    if lead is None:
        try:
            with transaction.atomic():
                new_lead.save(force_insert=True)
            lead, created = new_lead, True
        except IntegrityError:
            # Another request created it between our look-up and insert: merge into it.
            lead = _find_for_update(fields)
            if lead is None:
                raise
    if not written:
        if created:
            rows = _created_events(lead, scored, context, actor)
        else:
            filled = [name for name, value in fields.items() if name in MERGEABLE_FIELDS
                      and _is_empty(getattr(lead, name)) and not _is_empty(value)]
            for name in filled:
                setattr(lead, name, fields[name])
            new_attributes = {key: value for key, value in clean.attributes.items() if key not in lead.attributes}
            if new_attributes:
                lead.attributes = {**lead.attributes, **new_attributes}
            if lead.source_id is None and source is not None:
                lead.source = source
            if lead.form_id is None and form is not None:
                lead.form = form
            lead.last_activity_at = now
            lead.save()
            rows = [LeadEvent(
                lead=lead, kind=LeadEvent.Kind.RESUBMITTED, actor=actor,
                data={**context, "filled": filled + sorted(new_attributes)},
            )]
        if consent:
            rows.append(consent_row(lead))
        if postgres:
            # The timeline, consent and submission rows in one statement (one round trip).
            _write_rows(rows, update=processed(lead, created))
        else:
            for model in (LeadEvent, Consent):
                objs = [row for row in rows if isinstance(row, model)]
                if objs:
                    model.objects.bulk_create(objs)
            if submission is not None:
                instance, changes = processed(lead, created)
                Submission.objects.filter(pk=instance.pk).update(**changes)
    if created:
        if lead.status == LeadStatus.QUALIFIED and lead.owner_id is None:
            _auto_assign(lead)
        _webhook(lead, "lead.created")
        if scored:
            _webhook(lead, lead.status)
    else:
        _qualify(lead, ruleset_id)
    return lead, created



def _created_events(lead, scored, context, actor):
    """The timeline of a lead just created: captured and, when the rules judged it, the
    status they gave it."""
    rows = [LeadEvent(lead=lead, kind=LeadEvent.Kind.CAPTURED, actor=actor, data=context)]
    if scored:
        ruleset, verdict = scored
        rows.append(LeadEvent(
            lead=lead, kind=LeadEvent.Kind.STATUS_CHANGED, from_status=LeadStatus.NEW, to_status=lead.status,
            reason_id=lead.reason_id,
            data={"set_by": "rules", "ruleset": ruleset.pk, "version": ruleset.version, "score": verdict.score,
                  "temperature": verdict.temperature, "explanation": verdict.explanation},
        ))
    return rows


def _insert_with_rows(lead, rows, *, update=None, prefix=""):
    """PostgreSQL, one statement: INSERT ``lead`` unless a lead with its unique email
    exists and, only if it was inserted, ``rows`` (unsaved instances whose ``lead``
    column takes the new id) and ``update`` (``(instance, {field: value})``, its
    ``lead`` the new one). True and ``lead.pk`` set when inserted; False when the email
    exists, and then nothing was written. ``prefix``: SQL sent before it in the same
    round trip."""
    db = transaction.get_connection()
    quote = db.ops.quote_name
    insert, placeholders, fields = _insert_sql(Lead, db)
    parts = [f"new_lead AS ({insert} VALUES {placeholders} ON CONFLICT DO NOTHING RETURNING {quote('id')})"]
    params = _insert_values(lead, fields, db)
    for index, row in enumerate(rows):
        row_insert, _placeholders, row_fields = _insert_sql(type(row), db)
        values = _insert_values(row, row_fields, db)
        select = ", ".join("new_lead.id" if field.name == "lead" else "%s" for field in row_fields)
        parts.append(f"w{index} AS ({row_insert} SELECT {select} FROM new_lead)")
        params.extend(value for field, value in zip(row_fields, values, strict=True) if field.name != "lead")
    if update is not None:
        instance, changes = update
        model = type(instance)
        sql, update_params = _update_sql(model, instance.pk, {k: v for k, v in changes.items() if k != "lead"}, db,
                                         extra=f"{quote(model._meta.get_field('lead').column)} = new_lead.id",
                                         from_="new_lead")
        parts.append(f"w{len(rows)} AS ({sql})")
        params.extend(update_params)
    sql = f"WITH {', '.join(parts)} SELECT id FROM new_lead"
    with db.cursor() as cursor:
        execute_prepared(cursor, sql, params, prefix=prefix)
        row = cursor.fetchone()
    if row is None:
        return False
    lead.pk = row[0]
    lead._state.adding = False
    return True


def _write_rows(rows, *, update=None):
    """INSERT ``rows`` (unsaved model instances, any models) and, with ``update``
    ``(instance, {field: value})``, UPDATE that row, all in one statement (PostgreSQL:
    data-modifying WITH clauses). Prebuilt column lists; no ORM query compilation."""
    db = transaction.get_connection()
    parts, params = [], []
    by_model = {}
    for row in rows:
        by_model.setdefault(type(row), []).append(row)
    for model, objs in by_model.items():
        insert, placeholders, fields = _insert_sql(model, db)
        parts.append(f"{insert} VALUES {', '.join([placeholders] * len(objs))}")
        for obj in objs:
            params.extend(_insert_values(obj, fields, db))
    if update is not None:
        instance, changes = update
        sql, update_params = _update_sql(type(instance), instance.pk, changes, db)
        parts.append(sql)
        params.extend(update_params)
    if not parts:
        return
    *ctes, main = parts
    sql = (f"WITH {', '.join(f'w{i} AS ({part})' for i, part in enumerate(ctes))} {main}" if ctes else main)
    with db.cursor() as cursor:
        execute_prepared(cursor, sql, params)


_INSERT_SQL = {}


def _insert_sql(model, db):
    """``("INSERT INTO table (columns)", "(%s, …)", fields)`` for every concrete field
    but the primary key, built once per model."""
    if model not in _INSERT_SQL:
        quote = db.ops.quote_name
        fields = [field for field in model._meta.concrete_fields if not field.primary_key]
        _INSERT_SQL[model] = (
            f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(quote(f.column) for f in fields)})",
            f"({', '.join(['%s'] * len(fields))})",
            fields,
        )
    return _INSERT_SQL[model]


def _insert_values(obj, fields, db):
    return [field.get_db_prep_save(field.pre_save(obj, add=True), db) for field in fields]


def _update_sql(model, pk, changes, db, *, extra="", from_=""):
    """``UPDATE`` of the row ``pk`` with ``changes``; ``extra``: one more assignment in
    SQL, ``from_``: a FROM list it may refer to."""
    quote = db.ops.quote_name
    assignments, params = [], []
    for name, value in changes.items():
        field = model._meta.get_field(name)
        if field.is_relation and value is not None and hasattr(value, "pk"):
            value = value.pk
        assignments.append(f"{quote(field.column)} = %s")
        params.append(field.get_db_prep_save(value, db))
    if extra:
        assignments.append(extra)
    params.append(pk)
    table = quote(model._meta.db_table)
    return (f"UPDATE {table} SET {', '.join(assignments)}{f' FROM {from_}' if from_ else ''} "
            f"WHERE {table}.{quote(model._meta.pk.column)} = %s"), params


def _score_new(lead, now, ruleset_id):
    from scoring.services import score_new_lead

    return score_new_lead(lead, now=now, ruleset_id=ruleset_id)


def _qualify(lead, ruleset_id=_UNREAD):
    """Score the lead against the active rules now, in the caller's transaction."""
    from scoring.services import lead_qualify

    if ruleset_id is _UNREAD:
        lead_qualify(lead=lead)
    else:
        lead_qualify(lead=lead, ruleset_id=ruleset_id)


def _webhook(lead, event):
    """Outbound webhooks for this change (written in this transaction, sent after commit)."""
    from . import webhooks

    webhooks.webhook_event_record(lead=lead, event=webhooks.STATUS_EVENTS.get(event, event))


def _is_empty(value):
    return value is None or value == ""


def clean_for_form(form, payload, *, phone_region=None, empty_values=()):
    """Normalise a payload the way ``form`` accepts it."""
    from django.conf import settings

    accepted = form.get_accepted_fields()
    return clean_lead_data(
        payload, accepted=accepted, required=form.required_fields, standard=Form.STANDARD_FIELDS,
        default_interest=form.default_interest, consent_required=form.consent_required,
        honeypot=form.honeypot_field, phone_region=phone_region or settings.FUNIL_DEFAULT_PHONE_REGION,
        empty_values=empty_values,
    )


def submission_receive(*, form, payload, content_type="", ip=None, user_agent="", referrer="", origin="",
                       idempotency_key=None, malformed=None):
    """Store a submission exactly as it arrived, then process it into a lead, in one
    transaction with one durable commit. Returns ``(submission, stored_now)``.

    The raw row is the transaction's first statement, and processing runs inside a
    savepoint: if it fails, only the savepoint is rolled back and the raw submission
    commits with its error (status ``failed``) for ``replay_submissions``. Nothing is
    answered before the commit, so a submission the sender saw accepted is stored;
    one whose request died before the commit was not accepted (the sender retries, with
    its ``Idempotency-Key`` if it has one). ``malformed``: the body could not be parsed
    (the submission is kept as invalid with that error). With an idempotency key already
    used on this form, returns the first submission instead and processes nothing.
    """
    submission = Submission(
        form=form, payload=payload, content_type=content_type[:100], ip=ip, user_agent=user_agent[:500],
        referrer=referrer[:1000], origin=origin[:255], idempotency_key=idempotency_key,
    )
    with transaction.atomic():
        stored, ruleset_id = _submission_insert(submission)
        if not stored:
            return Submission.objects.get(form=form, idempotency_key=idempotency_key), False
        if malformed:
            changes = {"status": Submission.Status.INVALID, "errors": {"__all__": malformed}}
            Submission.objects.filter(pk=submission.pk).update(**changes)
            for name, value in changes.items():
                setattr(submission, name, value)
            return submission, True
        return _submission_process(submission, ruleset_id=ruleset_id), True


def _submission_insert(submission):
    """Insert the raw submission: ``(stored, active ruleset id)``; ``stored`` is False
    when its idempotency key is already used on its form. On PostgreSQL one round trip,
    which also takes the ruleset lock and reads the active ruleset's id
    (``scoring.services.active_ruleset_id``)."""
    from scoring.models import Ruleset
    from scoring.services import active_ruleset_id, ruleset_lock_sql

    if connection.vendor != "postgresql":
        if submission.idempotency_key:
            if Submission.objects.filter(form=submission.form, idempotency_key=submission.idempotency_key).exists():
                return False, None
            try:
                with transaction.atomic():
                    submission.save(force_insert=True)
            except IntegrityError:
                return False, None
        else:
            submission.save(force_insert=True)
        return True, active_ruleset_id()
    db = transaction.get_connection()
    insert, placeholders, fields = _insert_sql(Submission, db)
    values = _insert_values(submission, fields, db)
    conflict = (" ON CONFLICT (form_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"
                if submission.idempotency_key else "")
    sql = (f"{insert} VALUES {placeholders}{conflict} RETURNING id, "
           f"(SELECT id FROM {db.ops.quote_name(Ruleset._meta.db_table)} WHERE state = 'active')")
    with db.cursor() as cursor:
        execute_prepared(cursor, sql, values, prefix=ruleset_lock_sql())
        row = cursor.fetchone()
    if row is None:
        return False, None
    submission.pk = row[0]
    submission._state.adding = False
    return True, row[1]


def submission_process(*, submission):
    """Process a stored submission again (``replay_submissions``, the admin's replay),
    in the caller's transaction if there is one. Returns the submission with its new
    status."""
    from scoring.services import active_ruleset_id

    with transaction.atomic():
        return _submission_process(submission, ruleset_id=active_ruleset_id())


def _submission_process(submission, *, ruleset_id):
    """Turn a stored submission into a lead. A honeypot hit is kept as spam; invalid
    data is kept with its errors; an unexpected failure rolls back what processing
    wrote (``lead_capture`` runs in a savepoint) and keeps the submission with its error
    for ``replay_submissions``."""
    form = submission.form
    payload = submission.payload if isinstance(submission.payload, dict) else {}
    now = timezone.now()
    changes = {"attempts": submission.attempts + 1, "processed_at": now}
    if payload.get(form.honeypot_field):
        changes["status"] = Submission.Status.SPAM
    else:
        clean = clean_for_form(form, payload)
        changes["dropped_keys"] = clean.dropped
        if not clean.is_valid:
            changes.update(status=Submission.Status.INVALID, errors=clean.errors)
        else:
            savepoint = _Savepoint() if connection.vendor == "postgresql" else None
            try:
                if savepoint is None:
                    lead, created = lead_capture(  # in a savepoint of its own (transaction.atomic)
                        clean=clean, form=form, submission=submission, ip=submission.ip, submission_changes=changes,
                        ruleset_id=ruleset_id,
                    )
                else:
                    lead, created = _lead_capture(
                        clean=clean, form=form, submission=submission, ip=submission.ip, submission_changes=changes,
                        ruleset_id=ruleset_id, savepoint=savepoint,
                    )
                changes.update(status=Submission.Status.PROCESSED, lead=lead, created_lead=created, errors={})
            except Exception as exc:
                if savepoint is not None:
                    savepoint.rollback()
                logger.exception("Processing submission %s failed", submission.pk)
                changes.update(
                    status=Submission.Status.FAILED, processed_at=None,
                    errors={"__all__": f"{exc.__class__.__name__}: {exc}"[:1000]},
                )
    if changes.get("status") != Submission.Status.PROCESSED:
        Submission.objects.filter(pk=submission.pk).update(**changes)
    for name, value in changes.items():
        setattr(submission, name, value)
    return submission


def submissions_replay(*, stuck_after_seconds=60, max_attempts=5, limit=1000, include_invalid=False):
    """Process again the submissions that failed, or that were stored but never
    processed (the request died between the two). Each one is claimed with a row lock
    (SKIP LOCKED) so two replays never process the same submission.

    Returns counts by resulting status.
    """
    cutoff = timezone.now() - timezone.timedelta(seconds=stuck_after_seconds)
    statuses = [Submission.Status.FAILED, Submission.Status.PENDING]
    if include_invalid:
        statuses.append(Submission.Status.INVALID)
    candidates = list(
        Submission.objects.filter(status__in=statuses, received_at__lt=cutoff, attempts__lt=max_attempts)
        .order_by("id").values_list("id", flat=True)[:limit]
    )
    counts = {}
    for submission_id in candidates:
        with transaction.atomic():
            submission = (
                Submission.objects.select_for_update(skip_locked=True)
                .select_related("form").filter(pk=submission_id, status__in=statuses).first()
            )
            if submission is None:
                continue
            result = submission_process(submission=submission)
        counts[result.status] = counts.get(result.status, 0) + 1
    return counts


# --- Sources and forms (the catalogue the API edits) ---------------------------------


def source_ensure(*, slug, name, channel):
    """The source with this slug, created on first use (e.g. "api" for leads the
    authenticated API creates)."""
    from .models import Source

    source, _created = Source.objects.get_or_create(slug=slug, defaults={"name": name, "channel": channel})
    return source


# Fields of a Form that marketers edit.
FORM_FIELDS = (
    "slug", "name", "source", "default_interest", "fields", "required_fields", "allowed_origins", "success_url",
    "thank_you_message", "consent_text", "consent_version", "consent_required", "honeypot_field", "active",
)
_FIELD_NAME = r"[A-Za-z0-9_-]{1,50}"
_HOST_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"


@transaction.atomic
def form_create(*, slug, name, source, **values):
    """Create a capture form after checking it as a whole (see ``form_update``)."""
    form = Form(slug=slug, name=name, source=source)
    return _form_save(form, values, creating=True)


@transaction.atomic
def form_update(*, form, **values):
    """Change a form. ``fields`` and ``required_fields`` are lists of field names and
    every required field must be accepted (the usual contact fields when ``fields`` is
    empty); ``allowed_origins`` is a list (or lines) of ``scheme://host[:port]``."""
    form = Form.objects.select_for_update().get(pk=form.pk)
    return _form_save(form, values, creating=False)


@transaction.atomic
def form_delete(*, form):
    """Delete a form that never received anything. One with submissions or imports is
    part of the record: deactivate it instead."""
    if form.submissions.exists() or form.import_jobs.exists():
        raise ValidationError(
            {"slug": _("This form has received submissions; deactivate it instead of deleting it.")},
            code="protected",
        )
    form.delete()
    _forget_cached_forms()


def _form_save(form, values, *, creating):
    import re

    unknown = set(values) - set(FORM_FIELDS)
    if unknown:
        raise TypeError(f"unknown form fields: {sorted(unknown)}")
    errors = {}
    if "allowed_origins" in values:
        try:
            values["allowed_origins"] = "\n".join(normalize_origins(values["allowed_origins"]))
        except ValueError as exc:
            errors["allowed_origins"] = [str(exc)]
    for name, value in values.items():
        if name not in errors:
            setattr(form, name, value)
    for name in ("fields", "required_fields"):
        value = getattr(form, name)
        if not isinstance(value, list) or not all(
            isinstance(item, str) and re.fullmatch(_FIELD_NAME, item) for item in value
        ):
            errors[name] = [_("Give a list of field names: letters, digits, “-” and “_”, at most 50 characters.")]
        elif len(set(value)) != len(value):
            errors[name] = [_("Each field may be listed once.")]
    if "fields" not in errors and "required_fields" not in errors:
        from .capture import ALWAYS_ACCEPTED

        accepted = set(form.get_accepted_fields()) | set(ALWAYS_ACCEPTED)
        missing = [name for name in form.required_fields if name not in accepted]
        if missing:
            errors["required_fields"] = [
                _("Required fields must also be accepted: %(names)s.") % {"names": ", ".join(missing)}
            ]
        if form.honeypot_field in form.get_accepted_fields():
            errors["honeypot_field"] = [_("The honeypot must not be one of the accepted fields.")]
    try:
        form.full_clean(exclude=[name for name in errors if name != "slug"])
    except ValidationError as exc:
        for name, messages in exc.message_dict.items():
            errors.setdefault(name, []).extend(messages)
    if errors:
        raise ValidationError(errors)
    try:
        with transaction.atomic():
            form.save(force_insert=creating)
    except IntegrityError as exc:  # a concurrent request took the slug
        raise ValidationError({"slug": [_("A form with this slug already exists.")]}) from exc
    _forget_cached_forms()
    return form


def _forget_cached_forms():
    """This process's copy of the forms goes now (this transaction reads the change) and
    again on commit (a concurrent request may have read the old row meanwhile)."""
    hotcache.forget_all()
    transaction.on_commit(hotcache.forget_all)


def normalize_origins(origins):
    """Web origins a form accepts posts from, as browsers send them in ``Origin``:
    ``scheme://host[:port]``, lower case, IDNA host, default port left out.

    Accepts a list or newline-separated text; raises ``ValueError`` naming the first
    bad one."""
    if isinstance(origins, str):
        origins = origins.splitlines()
    result = []
    for raw in origins:
        origin = _normalize_origin(str(raw).strip()) if str(raw).strip() else None
        if origin and origin not in result:
            result.append(origin)
    return result


def _normalize_origin(value):
    import ipaddress
    import re
    from urllib.parse import urlsplit

    problem = ValueError(
        _("“%(origin)s” is not an origin: use scheme://host[:port], e.g. https://www.example.com, without a path.")
        % {"origin": value[:100]}
    )
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise problem from exc
    if (parts.scheme.lower() not in ("http", "https") or not parts.hostname or parts.username is not None
            or parts.password is not None or parts.path not in ("", "/") or parts.query or parts.fragment
            or value.endswith(("?", "#")) or any(ch.isspace() for ch in value)):
        raise problem
    scheme, host = parts.scheme.lower(), parts.hostname
    if ":" in host:
        try:
            host = f"[{ipaddress.IPv6Address(host).compressed}]"
        except ValueError as exc:
            raise problem from exc
    else:
        try:
            host = host.encode("idna").decode("ascii").lower()
        except UnicodeError as exc:
            raise problem from exc
        if len(host) > 253 or not all(re.fullmatch(_HOST_LABEL, label) for label in host.split(".")):
            raise problem
    if port is not None and not 0 < port < 65536:
        raise problem
    if port is not None and port != {"http": 80, "https": 443}[scheme]:
        return f"{scheme}://{host}:{port}"
    return f"{scheme}://{host}"
