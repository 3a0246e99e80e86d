"""The engine's database twin: a ruleset compiled to SQL expressions, so that
rescoring is one set-based UPDATE per chunk of ids.

Every operator here mirrors ``scoring.engine``; ``tests/scoring/test_engines_agree.py``
proves they give the same verdict for random leads and rulesets.
"""

import copy
import json
from functools import reduce
from operator import or_ as operator_or

from django.db import connections
from django.db.models import (
    BigIntegerField,
    BooleanField,
    Case,
    CharField,
    Count,
    DecimalField,
    Expression,
    F,
    FloatField,
    Func,
    IntegerField,
    OuterRef,
    Q,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.expressions import RawSQL
from django.db.models.functions import Cast, Coalesce, Floor, Greatest, Power
from django.db.models.lookups import (
    Exact,
    GreaterThan,
    GreaterThanOrEqual,
    In,
    IsNull,
    LessThan,
    LessThanOrEqual,
)

from . import engine

NEVER = Q(Value(False, output_field=BooleanField()))

# translate() looks each character up in its "from" list, one by one: most characters
# are lower-case ASCII that the fold leaves alone, so listing them first (mapped to
# themselves) gives the same result several times faster.
_COMMON = "".join(char for char in " aeosrintdmculpvgbfhqzjxkwy.@-_0123456789" if char not in engine.FOLD_FROM)
SQL_FOLD_FROM, SQL_FOLD_TO = _COMMON + engine.FOLD_FROM, _COMMON + engine.FOLD_TO


class Fold(Func):
    """Lower case without accents, with the engine's own character map."""

    output_field = CharField()

    def as_postgresql(self, compiler, connection, **extra):
        sql, params = compiler.compile(self.source_expressions[0])
        # Most texts are ASCII, where folding only lowers A-Z: lower() under the "C"
        # collation does exactly that, whatever the database's locale, and is cheap.
        return (
            f'(CASE WHEN octet_length({sql}) = length({sql}) THEN lower(({sql}) COLLATE "C") COLLATE "default" '
            f"ELSE translate({sql}, %s, %s) END)",
            [*params, *params, *params, *params, SQL_FOLD_FROM, SQL_FOLD_TO],
        )

    def as_sqlite(self, compiler, connection, **extra):
        return self.as_sql(compiler, connection, function="funil_fold", **extra)


class Matches(Func):
    """Does the text match a ``matches`` rule's pattern? PostgreSQL's ``~``; on SQLite the
    engine's own reading (Django's REGEXP there is Python's re with other defaults)."""

    output_field = BooleanField()

    def as_postgresql(self, compiler, connection, **extra):
        return self.as_sql(compiler, connection, template="(%(expressions)s)", arg_joiner=" ~ ", **extra)

    def as_sqlite(self, compiler, connection, **extra):
        return self.as_sql(compiler, connection, function="funil_matches", **extra)


class Position(Func):
    """1-based position of a substring, 0 when absent (strpos / instr)."""

    output_field = IntegerField()

    def as_postgresql(self, compiler, connection, **extra):
        return self.as_sql(compiler, connection, function="strpos", **extra)

    def as_sqlite(self, compiler, connection, **extra):
        return self.as_sql(compiler, connection, function="instr", **extra)


class EmailDomain(Func):
    output_field = CharField()

    def as_postgresql(self, compiler, connection, **extra):
        return self.as_sql(compiler, connection, template="split_part(%(expressions)s, '@', 2)", **extra)

    def as_sqlite(self, compiler, connection, **extra):
        # A function, not the text three times in a template: its parameters (an
        # attribute's key) would appear once.
        return self.as_sql(compiler, connection, function="funil_email_domain", **extra)


class TextAsNumber(Func):
    """A text that looks like -12 or 12.5 as a number, else NULL (never an error)."""

    output_field = DecimalField()

    def as_postgresql(self, compiler, connection, **extra):
        # The text appears twice, so do its parameters (an attribute's key is one).
        sql, params = compiler.compile(self.source_expressions[0])
        return f"(CASE WHEN {sql} ~ '{engine.NUMBER_RE.pattern}' THEN ({sql})::numeric END)", [*params, *params]

    def as_sqlite(self, compiler, connection, **extra):
        return self.as_sql(compiler, connection, function="funil_number", **extra)


class AttributeText(Func):
    """A custom field's value as text, the way ``engine.attribute_text`` reads it. The
    key is one object key, taken literally: ``KT()`` would split "frota__total" into a
    path and read "2024" as an array index."""

    output_field = CharField()

    def __init__(self, key):
        super().__init__(F("attributes"), Value(key))

    def as_postgresql(self, compiler, connection, **extra):
        column, key = (compiler.compile(expression) for expression in self.source_expressions)
        return f"({column[0]} ->> ({key[0]})::text)", [*column[1], *key[1]]

    def as_sqlite(self, compiler, connection, **extra):
        return self.as_sql(compiler, connection, function="funil_attribute", **extra)


class AgeSeconds(Func):
    """Seconds from a timestamp column to ``now`` (a parameter, never the clock)."""

    output_field = FloatField()

    def __init__(self, expression, now):
        super().__init__(expression, Value(now))

    def as_postgresql(self, compiler, connection, **extra):
        column, now = (compiler.compile(expression) for expression in self.source_expressions)
        return f"EXTRACT(EPOCH FROM ({now[0]}::timestamptz - {column[0]}))::float8", [*now[1], *column[1]]

    def as_sqlite(self, compiler, connection, **extra):
        column, now = (compiler.compile(expression) for expression in self.source_expressions)
        return f"((julianday({now[0]}) - julianday({column[0]})) * 86400.0)", [*now[1], *column[1]]


def register_sqlite_functions(sender, connection, **kwargs):
    """SQLite has no translate() or regex casts: give it the engine's own, in Python."""
    if connection.vendor != "sqlite":
        return

    def to_number(value):
        number = engine.as_number(value) if isinstance(value, str) else None
        return float(number) if number is not None else None

    connection.connection.create_function("funil_fold", 1, lambda v: None if v is None else engine.fold(v),
                                          deterministic=True)
    connection.connection.create_function("funil_number", 1, to_number, deterministic=True)

    def attribute(document, key):
        data = json.loads(document) if document else None
        return engine.attribute_text(data.get(key)) if isinstance(data, dict) else None

    connection.connection.create_function("funil_attribute", 2, attribute, deterministic=True)
    connection.connection.create_function(
        "funil_matches", 2, lambda text, pattern: None if text is None else bool(
            engine.python_regex(pattern).search(text)), deterministic=True,
    )
    connection.connection.create_function(
        "funil_email_domain", 1, lambda v: None if v is None else (v.split("@")[1] if "@" in v else ""),
        deterministic=True,
    )


class Shared(Expression):
    """A column of one of ``verdict_sql``'s per-lead lateral joins."""

    def __init__(self, table, name, output_field):
        super().__init__(output_field=output_field)
        self.table, self.name = table, name

    def as_sql(self, compiler, connection):
        return f"{self.table}.{self.name}", []


class PerLead:
    """What several rules read, computed once per lead by ``verdict_sql`` on PostgreSQL
    instead of once per rule (or once per mention): each folded text, and the lead's
    engagement figures in one pass over its events."""

    def __init__(self):
        self.folds = {}  # key -> (column name, expression over the lead)
        self.engagement = {}  # column name -> aggregate over the lead's events
        self.event_kinds = set()

    def fold(self, key, expression):
        if key not in self.folds:
            self.folds[key] = (f"f{len(self.folds)}", expression)
        name = self.folds[key][0]
        return Shared(name, name, CharField())

    def aggregate(self, aggregate, kinds, output_field):
        name = f"e{len(self.engagement)}"
        self.engagement[name] = aggregate
        self.event_kinds.update(kinds)
        return Shared("engagement", name, output_field)


# --- Rules to conditions ----------------------------------------------------------------


class Compiled:
    """A ruleset as expressions over ``leads.Lead``."""

    def __init__(self, ruleset: engine.Ruleset, *, now, source_ids=None, form_ids=None, reason_ids=None):
        self.ruleset = ruleset
        self.now = now
        self.source_ids = source_ids or {}
        self.form_ids = form_ids or {}
        self.reason_ids = reason_ids or {}
        self.per_lead = None  # a PerLead when verdict_sql shares folds and engagement between rules

    def sharing(self):
        """A copy whose rules read folded texts and engagement from ``verdict_sql``'s
        per-lead joins, collected in its ``per_lead``."""
        shared = copy.copy(self)
        shared.per_lead = PerLead()
        return shared

    def _folded(self, key, expression):
        if self.per_lead is None:
            return Fold(expression)
        return self.per_lead.fold(key, Fold(expression))

    # The three columns of the verdict before thresholds.
    def annotations(self):
        points = [Case(When(self.condition(rule), then=Value(rule.points)), default=Value(0),
                       output_field=IntegerField())
                  for rule in self.ruleset.rules if rule.effect == engine.POINTS and rule.points]
        score = sum(points[1:], points[0]) if points else Value(0, output_field=IntegerField())
        engagement = self.engagement_points()
        if engagement is not None:
            score = score + Cast(Floor(engagement + Value(0.5)), IntegerField())
        return {
            "new_score": score,
            "oof_reason": self.knock_out(engine.OUT_OF_FOCUS),
            "dq_reason": self.knock_out(engine.DISQUALIFIED),
        }

    def knock_out(self, effect):
        whens = [When(self.condition(rule), then=Value(self.reason_ids.get(rule.reason)))
                 for rule in self.ruleset.rules if rule.effect == effect]
        if not whens:
            return Value(None, output_field=IntegerField())
        return Case(*whens, default=Value(None), output_field=IntegerField())

    def condition(self, rule):
        kind = engine.field_kind(rule.field)
        operator = rule.operator
        if kind == "engagement":
            return self._number_condition(operator, self.engagement_count(rule), rule.value)
        if rule.field in ("source", "form"):
            return self._relation_condition(rule)
        if kind == "attribute":
            column = AttributeText(rule.field[len(engine.ATTRIBUTE_PREFIX):])
        else:
            column = F(rule.field)
        if kind == "number":
            present = Q(IsNull(column, False))
        else:
            present = Q(IsNull(column, False)) & ~Q(Exact(column, ""))
        if operator == "is_empty":
            return ~present
        if operator == "is_not_empty":
            return present
        if kind == "number":
            return present & self._number_condition(operator, column, rule.value)
        if kind == "attribute" and operator in ("gt", "gte", "lt", "lte", "between"):
            number = TextAsNumber(column)
            return present & Q(IsNull(number, False)) & self._number_condition(operator, number, rule.value)
        return present & self._text_condition(operator, self._folded(rule.field, column), rule.value)

    def _relation_condition(self, rule):
        """source / form compare by slug: the slugs become ids when compiling."""
        ids = self.source_ids if rule.field == "source" else self.form_ids
        column = F(f"{rule.field}_id")
        present = Q(IsNull(column, False))
        if rule.operator == "is_empty":
            return ~present
        if rule.operator == "is_not_empty":
            return present
        folded = {engine.fold(slug): pk for slug, pk in ids.items()}
        wanted = [rule.value] if rule.operator in ("equals", "not_equals") else rule.value
        if rule.operator in ("equals", "not_equals", "in", "not_in"):
            matching = [folded[engine.fold(item)] for item in wanted if engine.fold(item) in folded]
            positive = Q(In(column, matching)) if matching else NEVER
            return present & (~positive if rule.operator in ("not_equals", "not_in") else positive)
        # Text operators over the slug: decide per known slug, here.
        matching = [pk for slug, pk in ids.items()
                    if engine.compare_text(rule.operator, engine.fold(slug), rule.value)]
        return present & (Q(In(column, matching)) if matching else NEVER)

    def _text_condition(self, operator, text, value):
        if operator in engine.NEGATED:
            return ~self._text_condition(engine.NEGATED[operator], text, value)
        if operator == "equals":
            return Q(Exact(text, Value(engine.fold(value))))
        if operator == "in":
            return Q(In(text, sorted({engine.fold(item) for item in value})))
        if operator == "contains":
            return Q(GreaterThan(Position(text, Value(engine.fold(value))), 0))
        if operator == "contains_any":
            conditions = [Q(GreaterThan(Position(text, Value(engine.fold(item))), 0)) for item in value]
            return reduce(operator_or, conditions)
        if operator == "starts_with":
            return Q(Exact(Position(text, Value(engine.fold(value))), 1))
        if operator == "email_domain_in":
            return Q(In(EmailDomain(text), sorted({engine.fold(item) for item in value})))
        if operator == "matches":
            return Q(Matches(text, Value(engine.sql_regex(value))))
        raise engine.RuleError("operator", operator)

    def _number_condition(self, operator, number, value):
        if operator in engine.NEGATED:
            return ~self._number_condition(engine.NEGATED[operator], number, value)
        as_value = lambda item: Value(engine.as_number(item), output_field=DecimalField())  # noqa: E731
        if operator == "equals":
            return Q(Exact(number, as_value(value)))
        if operator == "in":
            return Q(In(number, [engine.as_number(item) for item in value]))
        if operator == "between":
            low, high = sorted(engine.as_number(item) for item in value)
            return Q(GreaterThanOrEqual(number, as_value(low))) & Q(LessThanOrEqual(number, as_value(high)))
        lookup = {"gt": GreaterThan, "gte": GreaterThanOrEqual, "lt": LessThan, "lte": LessThanOrEqual}[operator]
        return Q(lookup(number, as_value(value)))

    # --- Engagement ---------------------------------------------------------------

    def _events(self):
        from leads.models import LeadEvent

        return LeadEvent.objects.filter(lead=OuterRef("pk")).order_by().values("lead")

    def engagement_count(self, rule):
        kinds = engine.ENGAGEMENT_EVENT_KINDS[engine.ENGAGEMENT_FIELDS[rule.field]]
        since = self.now - _days(rule.window_days)
        if self.per_lead is not None:
            # "kind", not "id": the timeline index (lead, created_at, kind) then answers alone (index-only scan).
            counted = Count("kind", filter=Q(kind__in=kinds, created_at__gte=since))
            return Coalesce(self.per_lead.aggregate(counted, kinds, IntegerField()), Value(0))
        counted = self._events().filter(kind__in=kinds, created_at__gte=since).annotate(n=Count("id")).values("n")
        return Coalesce(Subquery(counted, output_field=IntegerField()), Value(0))

    def engagement_points(self):
        weights = {kind: points for name, points in self.ruleset.engagement_points.items() if points
                   for kind in engine.ENGAGEMENT_EVENT_KINDS[name]}
        if not weights:
            return None
        weight = Case(*[When(kind=kind, then=Value(float(points))) for kind, points in weights.items()],
                      default=Value(0.0), output_field=FloatField())
        half_life = float(self.ruleset.half_life_days * 86400)
        decay = Power(Value(0.5), Greatest(AgeSeconds("created_at", self.now), Value(0.0)) / Value(half_life))
        if self.per_lead is not None:
            summed = Sum(weight * decay, filter=Q(kind__in=list(weights)), output_field=FloatField())
            return Coalesce(self.per_lead.aggregate(summed, weights, FloatField()), Value(0.0))
        summed = (self._events().filter(kind__in=list(weights))
                  .annotate(total=Sum(weight * decay, output_field=FloatField())).values("total"))
        return Coalesce(Subquery(summed, output_field=FloatField()), Value(0.0))


def _days(days):
    from datetime import timedelta

    return timedelta(days=days)


_THRESHOLDS = """
    CASE WHEN v.new_score >= %s THEN 'hot' WHEN v.new_score >= %s THEN 'warm' ELSE 'cold' END AS new_temperature,
    CASE WHEN v.oof_reason IS NOT NULL THEN 'out_of_focus'
         WHEN v.dq_reason IS NOT NULL THEN 'disqualified'
         WHEN v.new_score >= %s THEN 'qualified' ELSE 'disqualified' END AS new_status,
    COALESCE(v.oof_reason, v.dq_reason, CASE WHEN v.new_score >= %s THEN NULL ELSE %s END) AS new_reason
"""


def _compile(queryset, expression):
    """SQL of an expression over the queryset's model table, as (sql, params)."""
    query = queryset.model._default_manager.all().query
    query.add_annotation(expression, "verdict_part")
    return query.get_compiler(using=queryset.db).compile(query.annotations["verdict_part"])


class ChunkBound(Expression):
    """A chunk's first id (excluded) or last id (included), left as a placeholder: a
    rescoring job compiles its statement once and fills the bounds in for each chunk."""

    def __init__(self, which):
        super().__init__(output_field=BigIntegerField())
        self.which = which

    def as_sql(self, compiler, connection):
        return "%s", [self]


def chunk_verdict_sql(compiled, leads_queryset, *, row_version=False):
    """``verdict_sql`` for chunks of ``leads_queryset`` by id, compiled once: returns
    ``bind(start, end) -> (sql, params)`` for the leads with ids in (start, end].
    (Compiling the ruleset's expressions costs tens of milliseconds of Python per call.)"""
    start, end = ChunkBound("start"), ChunkBound("end")
    sql, params = verdict_sql(compiled, leads_queryset.filter(id__gt=start, id__lte=end), id_range=(start, end),
                              row_version=row_version)

    def bind(first, last):
        values = {"start": first, "end": last}
        return sql, [values[param.which] if isinstance(param, ChunkBound) else param for param in params]

    return bind


def _verdict_sql_postgresql(compiled, leads_queryset, id_range=None, row_version=False):
    """``verdict_sql`` with every costly part computed once per lead, each in a lateral
    join: the lead's engagement (one pass over its events, and only when the rules use
    engagement), its folded texts (one translate() per field, however many rules read
    it), then the three verdict columns. PostgreSQL would inline a plain subquery's
    columns into every expression that mentions them and compute them again."""
    from leads.models import LeadEvent

    shared = compiled.sharing()
    parts = shared.annotations()
    per_lead = shared.per_lead
    columns = [field.attname for field in leads_queryset.model._meta.concrete_fields]
    if row_version:
        # The row's version (its xmin): a later UPDATE can tell that the row is still the one read.
        leads_queryset = leads_queryset.annotate(row_version=RawSQL('"leads_lead"."xmin"::text::bigint', []))
        columns.append("row_version")
    lead_sql, lead_params = leads_queryset.order_by().values(*columns).query.sql_with_params()
    joins, params = [], list(lead_params)
    if per_lead.engagement and id_range:
        # The events of a range of leads: one index range scan, grouped by lead.
        events = (
            LeadEvent.objects.filter(lead_id__gt=id_range[0], lead_id__lte=id_range[1],
                                     kind__in=sorted(per_lead.event_kinds))
            .order_by().values("lead_id").annotate(**per_lead.engagement).values("lead_id", *per_lead.engagement)
        )
        events_sql, events_params = events.query.sql_with_params()
        joins.append(f"LEFT JOIN ({events_sql}) AS engagement ON engagement.lead_id = leads_lead.id")
        params += events_params
    elif per_lead.engagement:
        events = (
            LeadEvent.objects.filter(lead_id=Shared("leads_lead", "id", BigIntegerField()),
                                     kind__in=sorted(per_lead.event_kinds))
            .order_by().values("lead_id").annotate(**per_lead.engagement).values(*per_lead.engagement)
        )
        events_sql, events_params = events.query.sql_with_params()
        joins.append(f"LEFT JOIN LATERAL ({events_sql}) AS engagement ON TRUE")
        params += events_params
    for name, expression in per_lead.folds.values():
        # One join per text, so that PostgreSQL can remember (Memoize) the folds of a
        # field with few distinct values (state, job title, city...) from row to row.
        sql, expression_params = _compile(leads_queryset, expression)
        joins.append(f"CROSS JOIN LATERAL (SELECT {sql} AS {name} OFFSET 0) AS {name}")
        params += expression_params
    sqls = []
    for name in ("new_score", "oof_reason", "dq_reason"):
        sql, expression_params = _compile(leads_queryset, parts[name])
        sqls.append(f"({sql})::integer AS {name}")
        params += expression_params
    joins.append(f"CROSS JOIN LATERAL (SELECT {', '.join(sqls)} OFFSET 0) AS v")
    current = ", ".join(f"leads_lead.{column}" for column in (
        "id", "status", "status_set_by", "score", "temperature", "reason_id", "requalify_at",
        *(["row_version"] if row_version else [])))
    thresholds = compiled.ruleset
    below = compiled.reason_ids.get(engine.BELOW_THRESHOLD)
    sql = f"""
        SELECT {current}, v.new_score, v.oof_reason, v.dq_reason, {_THRESHOLDS}
        FROM ({lead_sql}) AS leads_lead
        {" ".join(joins)}
    """
    return sql, [thresholds.hot, thresholds.warm, thresholds.qualify, thresholds.qualify, below, *params]


def verdict_sql(compiled, leads_queryset, *, id_range=None, row_version=False):
    """SELECT id, the lead's current verdict columns, and the new ones, as (sql, params).
    ``id_range`` (first id excluded, last included), when given, bounds the queryset's
    ids: their events are then read in one range scan. ``row_version`` (PostgreSQL) adds
    the row's version, ``row_version``."""
    if connections[leads_queryset.db].vendor == "postgresql":
        return _verdict_sql_postgresql(compiled, leads_queryset, id_range, row_version)
    thresholds = compiled.ruleset
    below = compiled.reason_ids.get(engine.BELOW_THRESHOLD)
    inner = leads_queryset.order_by().annotate(**compiled.annotations()).values(
        "id", "status", "status_set_by", "score", "temperature", "reason_id", "requalify_at",
        "new_score", "oof_reason", "dq_reason",
    )
    inner_sql, inner_params = inner.query.sql_with_params()
    sql = f"""
        SELECT v.*,
               CASE WHEN v.new_score >= %s THEN 'hot' WHEN v.new_score >= %s THEN 'warm' ELSE 'cold' END
                   AS new_temperature,
               CASE WHEN v.oof_reason IS NOT NULL THEN 'out_of_focus'
                    WHEN v.dq_reason IS NOT NULL THEN 'disqualified'
                    WHEN v.new_score >= %s THEN 'qualified' ELSE 'disqualified' END AS new_status,
               COALESCE(v.oof_reason, v.dq_reason, CASE WHEN v.new_score >= %s THEN NULL ELSE %s END) AS new_reason
        FROM ({inner_sql}) v
    """
    return sql, [thresholds.hot, thresholds.warm, thresholds.qualify, thresholds.qualify, below, *inner_params]

