"""Enrollments on the lead's timeline: ``nurture_enrolled`` when a lead enters a sequence,
``nurture_left`` (with why) when it leaves. Written set-based (one ``INSERT … SELECT``
per call) in the transaction that changes the enrollments, so the timeline and the
enrollments never disagree, whether one lead or a whole segment moves."""

from django.db import connection, transaction
from django.db.models import DateTimeField, F, IntegerField, Value
from django.db.models.functions import JSONObject

from leads.models import LeadEvent

from .models import Enrollment


def enrollments_enrolled_record(*, enrollment_ids, now, how):
    """One ``nurture_enrolled`` event per enrollment (its lead, its sequence; ``how``:
    ``hand`` or ``segment``; the person who enrolled it as the actor). Returns how many."""
    if not enrollment_ids:
        return 0
    return _insert_events(enrollment_ids, kind=LeadEvent.Kind.NURTURE_ENROLLED, actor=F("enrolled_by_id"), now=now,
                          extra={"how": Value(how)})


@transaction.atomic
def enrollments_end(*, enrollment_ids, status, reason, now, actor=None):
    """End the enrollments among ``enrollment_ids`` that are still active: ``status``
    (completed, exited, removed), ``reason`` as the exit reason, and one ``nurture_left``
    event each with ``why`` = ``reason``. The rows are locked first, so two callers never
    both end (and note) the same enrollment. Returns the ids it ended."""
    if not enrollment_ids:
        return []
    ended = list(
        Enrollment.objects.select_for_update().filter(pk__in=list(enrollment_ids), status=Enrollment.Status.ACTIVE)
        .order_by("pk").values_list("pk", flat=True)
    )
    if not ended:
        return []
    Enrollment.objects.filter(pk__in=ended).update(status=status, exit_reason=reason, ended_at=now)
    _insert_events(ended, kind=LeadEvent.Kind.NURTURE_LEFT, actor=Value(getattr(actor, "pk", None)), now=now,
                   extra={"why": Value(reason), "status": Value(status)})
    return ended


def _insert_events(enrollment_ids, *, kind, actor, now, extra):
    """INSERT INTO the timeline SELECT one row per enrollment: a single statement."""
    columns = {
        "lead_id": F("lead_id"),
        "kind": Value(kind),
        "actor_id": _typed(actor, IntegerField()),
        "from_status": Value(""),
        "to_status": Value(""),
        "reason_id": Value(None, output_field=IntegerField()),
        "note": Value(""),
        "data": JSONObject(sequence=F("sequence_id"), sequence_name=F("sequence__name"), enrollment=F("id"),
                           **extra),
        "created_at": Value(now, output_field=DateTimeField()),
    }
    aliases = {f"_event_{name}": expression for name, expression in columns.items()}
    rows = (Enrollment.objects.filter(pk__in=list(enrollment_ids)).order_by("pk")
            .annotate(**aliases).values_list(*aliases))
    select, params = rows.query.sql_with_params()
    quote = connection.ops.quote_name
    table = quote(LeadEvent._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {table} ({', '.join(quote(name) for name in columns)}) {select}", params)
        return cursor.rowcount


def _typed(expression, output_field):
    if isinstance(expression, Value):
        return Value(expression.value, output_field=output_field)
    return expression
