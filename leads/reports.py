"""Reads for the dashboard: how the qualification process performs. Every figure is an
aggregate computed by the database; Python only arranges the rows it gets back.

The population of a report is a *cohort*: the leads captured in the period (optionally
narrowed to a saved segment). Each figure is defined once, here:

- captured: leads in the cohort;
- qualified: those that reached qualification, i.e. have been qualified at some point
  (``qualified_at`` set) or are converted;
- converted: status converted; disqualified / out of focus: their status now;
- time to qualify: ``created_at`` → ``qualified_at`` (the latest qualification);
- time to first touch: ``qualified_at`` → ``first_touched_at`` (a rep's first action);
- spend: the spend records of the months the period touches (whole months), matched by
  source or by UTM campaign for those breakdowns; cost per lead = spend / captured,
  cost per qualified lead = spend / qualified, ROI = (deal value of converted − spend) / spend;
- rule effectiveness: which leads each rule of the active ruleset matches *now* (the
  rule compiled to SQL by ``scoring.compiler``), and how those leads ended up;
- requalification: leads with a 'requalified' event to qualified within the period, and
  how many of those are converted now.
"""

import datetime
import threading
from dataclasses import dataclass, field
from decimal import Decimal

from django.db import connection, transaction
from django.db.models import (
    Aggregate,
    Avg,
    BigIntegerField,
    BooleanField,
    Case,
    Count,
    Exists,
    ExpressionWrapper,
    F,
    FilteredRelation,
    FloatField,
    Func,
    IntegerField,
    Max,
    OuterRef,
    Q,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Greatest
from django.utils import timezone, translation
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext_lazy as _

from .models import Form, Lead, LeadEvent, LeadStatus, Reason, RuleMatchDay, Source, SpendRecord

BREAKDOWNS = {
    "": _("None"),
    "source": _("Source"),
    "form": _("Form"),
    "utm_campaign": _("UTM campaign"),
    "interest": _("Interest"),
    "rep": _("Rep"),
}
_GROUP_COLUMN = {"source": "source_id", "form": "form_id", "utm_campaign": "utm_campaign",
                 "interest": "interest", "rep": "owner_id"}
MAX_GROUPS = 25
TREND_REASONS = 5
DEFAULT_DAYS = 90


# --- Database functions --------------------------------------------------------------------


class SecondsBetween(Func):
    """end − start in seconds (a float), NULL when either is NULL."""

    output_field = FloatField()
    arity = 2

    def as_postgresql(self, compiler, connection, **extra):
        start, start_params = compiler.compile(self.source_expressions[0])
        end, end_params = compiler.compile(self.source_expressions[1])
        # date_part is a float already; EXTRACT computes a numeric, several times slower.
        return f"date_part('epoch', {end} - {start})", [*end_params, *start_params]

    def as_sql(self, compiler, connection, **extra):
        start, start_params = compiler.compile(self.source_expressions[0])
        end, end_params = compiler.compile(self.source_expressions[1])
        return f"((julianday({end}) - julianday({start})) * 86400.0)", [*end_params, *start_params]


class _SqliteMedian:
    def __init__(self):
        self.values = []

    def step(self, value):
        if value is not None:
            self.values.append(value)

    def finalize(self):
        values = sorted(self.values)
        n = len(values)
        if not n:
            return None
        middle = n // 2
        return float(values[middle]) if n % 2 else (values[middle - 1] + values[middle]) / 2.0


class Median(Aggregate):
    """The median of the non-NULL values (the mean of the two middle ones for an even count)."""

    name = "Median"
    output_field = FloatField()
    allow_distinct = False

    def as_postgresql(self, compiler, connection, **extra):
        inner, params = compiler.compile(self.source_expressions[0])
        return f"percentile_cont(0.5) WITHIN GROUP (ORDER BY {inner})", params

    def as_sqlite(self, compiler, connection, **extra):
        connection.ensure_connection()
        connection.connection.create_aggregate("funil_median", 1, _SqliteMedian)
        inner, params = compiler.compile(self.source_expressions[0])
        return f"funil_median({inner})", params


class MonthBucket(Func):
    """The 1-based index of the month a timestamp falls in, given ``bounds``: the first
    instants of consecutive months, then the end of the last (0 before the first). On
    PostgreSQL ``width_bucket`` (a binary search per row, where truncating to the month in
    the local time zone would convert every timestamp); elsewhere a sum of comparisons."""

    output_field = IntegerField()

    def __init__(self, expression, bounds):
        super().__init__(expression)
        self.bounds = list(bounds)

    def as_postgresql(self, compiler, connection, **extra):
        sql, params = compiler.compile(self.source_expressions[0])
        return f"width_bucket({sql}, %s::timestamptz[])", [*params, self.bounds]

    def as_sql(self, compiler, connection, **extra):
        sql, params = compiler.compile(self.source_expressions[0])
        bounds = [connection.ops.adapt_datetimefield_value(bound) for bound in self.bounds]
        return "(" + " + ".join(f"({sql} >= %s)" for _bound in bounds) + ")", [
            value for bound in bounds for value in (*params, bound)]


def _when(condition, value):
    return Case(When(condition, then=value), default=Value(None), output_field=FloatField())


REACHED_QUALIFIED = Q(qualified_at__isnull=False) | Q(status=LeadStatus.CONVERTED)
CONVERTED = Q(status=LeadStatus.CONVERTED)
# A lead the rules qualify at capture is stamped in the same moment it is created; a clock read a few
# milliseconds apart must count as 0 s, not drop the lead from the figure (nor make it negative).
TO_QUALIFY = Greatest(SecondsBetween(F("created_at"), F("qualified_at")), Value(0.0))
TO_TOUCH = SecondsBetween(F("qualified_at"), F("first_touched_at"))
TOUCHED = Q(qualified_at__isnull=False, first_touched_at__isnull=False, first_touched_at__gte=F("qualified_at"))
QUALIFY_TIMED = Q(qualified_at__isnull=False, qualified_at__gte=F("created_at") - datetime.timedelta(minutes=1))


def funnel_aggregates():
    """The per-cohort (or per-group) aggregates of the funnel, as one SELECT's columns."""
    return {
        "captured": Count("id"),
        "qualified": Count("id", filter=REACHED_QUALIFIED),
        "converted": Count("id", filter=CONVERTED),
        "disqualified": Count("id", filter=Q(status=LeadStatus.DISQUALIFIED)),
        "out_of_focus": Count("id", filter=Q(status=LeadStatus.OUT_OF_FOCUS)),
        "new": Count("id", filter=Q(status=LeadStatus.NEW)),
        "deal_value": Sum("deal_value", filter=CONVERTED),
        "qualify_mean": Avg(_when(QUALIFY_TIMED, TO_QUALIFY)),
        "qualify_median": Median(_when(QUALIFY_TIMED, TO_QUALIFY)),
        "touch_mean": Avg(_when(TOUCHED, TO_TOUCH)),
        "touch_median": Median(_when(TOUCHED, TO_TOUCH)),
        "good_fit": Count("id", filter=Q(fit="good")),
        "bad_fit": Count("id", filter=Q(fit="bad")),
    }


# --- Parameters ------------------------------------------------------------------------------


@dataclass
class Period:
    start: datetime.date
    end: datetime.date  # inclusive

    @classmethod
    def default(cls, today=None):
        today = today or timezone.localdate()
        return cls(start=today - datetime.timedelta(days=DEFAULT_DAYS - 1), end=today)

    def bounds(self):
        """[start, end) as aware datetimes in the current time zone."""
        tz = timezone.get_current_timezone()
        start = datetime.datetime.combine(self.start, datetime.time.min, tzinfo=tz)
        end = datetime.datetime.combine(self.end + datetime.timedelta(days=1), datetime.time.min, tzinfo=tz)
        return start, end

    def months(self):
        """[first day of the start's month, first day of the month after the end's)."""
        after = (self.end.replace(day=1) + datetime.timedelta(days=32)).replace(day=1)
        return self.start.replace(day=1), after


def cohort(*, period, base=None):
    """Leads captured in ``period`` (of ``base``, e.g. a segment's queryset)."""
    start, end = period.bounds()
    base = Lead.objects.all() if base is None else base
    return base.filter(created_at__gte=start, created_at__lt=end).order_by()


# --- Figures ---------------------------------------------------------------------------------


def _ratio(numerator, denominator):
    if not denominator or numerator is None:
        return None
    return Decimal(numerator) / Decimal(denominator)


@dataclass
class Row:
    """The funnel of a cohort or of one group of it, with its money."""

    key: object
    label: str
    captured: int = 0
    qualified: int = 0
    converted: int = 0
    disqualified: int = 0
    out_of_focus: int = 0
    new: int = 0
    deal_value: Decimal = Decimal("0")
    qualify_mean: float | None = None
    qualify_median: float | None = None
    touch_mean: float | None = None
    touch_median: float | None = None
    good_fit: int = 0
    bad_fit: int = 0
    spend: Decimal | None = None

    @property
    def qualification_rate(self):
        return _ratio(self.qualified, self.captured)

    @property
    def conversion_rate(self):
        """Converted among those that reached qualification."""
        return _ratio(self.converted, self.qualified)

    @property
    def overall_rate(self):
        return _ratio(self.converted, self.captured)

    @property
    def disqualified_rate(self):
        return _ratio(self.disqualified, self.captured)

    @property
    def out_of_focus_rate(self):
        return _ratio(self.out_of_focus, self.captured)

    @property
    def cost_per_lead(self):
        return None if self.spend is None else _ratio(self.spend, self.captured)

    @property
    def cost_per_qualified(self):
        return None if self.spend is None else _ratio(self.spend, self.qualified)

    @property
    def roi(self):
        if not self.spend:
            return None
        return (self.deal_value - self.spend) / self.spend


def _row(key, label, values, spend=None):
    values = {**values, "deal_value": values.get("deal_value") or Decimal("0")}
    return Row(key=key, label=label, spend=spend, **values)


def spend_total(period):
    first, after = period.months()
    total = SpendRecord.objects.filter(month__gte=first, month__lt=after).aggregate(total=Sum("amount"))["total"]
    return total if total is not None else Decimal("0")


def spend_by(dimension, period):
    """{group key: spend} for the source or campaign breakdowns; None for the others."""
    first, after = period.months()
    records = SpendRecord.objects.filter(month__gte=first, month__lt=after).order_by()
    if dimension == "source":
        return dict(records.filter(source__isnull=False).values_list("source_id").annotate(total=Sum("amount")))
    if dimension == "utm_campaign":
        return dict(records.exclude(utm_campaign="").values_list("utm_campaign").annotate(total=Sum("amount")))
    return None


def _labels(dimension, keys):
    keys = [key for key in keys if key not in (None, "")]
    if dimension == "source":
        return dict(Source.objects.filter(pk__in=keys).values_list("pk", "name"))
    if dimension == "form":
        return dict(Form.objects.filter(pk__in=keys).values_list("pk", "name"))
    if dimension == "rep":
        from django.contrib.auth import get_user_model

        users = get_user_model().objects.filter(pk__in=keys)
        return {user.pk: user.get_full_name() or user.get_username() for user in users}
    return {key: key for key in keys}


class Breakdown(list):
    """The rows of a breakdown; ``total_times``: the whole cohort's times when the pass
    that timed the groups gave them too (else None)."""

    total_times = None


_TIME_NAMES = ("qualify_mean", "qualify_median", "touch_mean", "touch_median")


def _group_times_postgresql(leads, column, top):
    """The times of each group in ``top`` (keys), of the other groups together, and of
    the whole cohort, in one pass over its qualified leads: GROUP BY GROUPING SETS over
    the group's rank in ``top`` (an integer: sorting the medians' rows by a text key,
    such as the interest, under the database's collation cost more than the rest).
    Returns ({key: times}, times of the others, times of all)."""
    keys = [key for key in top if key is not None]
    rows = (leads.filter(qualified_at__isnull=False)
            .annotate(r_qualify=_when(QUALIFY_TIMED, TO_QUALIFY), r_touch=_when(TOUCHED, TO_TOUCH))
            .values_list(column, "r_qualify", "r_touch"))
    inner, params = rows.query.sql_with_params()
    # Rank 1..n: the keys in ``top``; n + 1: no key (NULL), when it is in ``top``; NULL: the others.
    null_rank = len(keys) + 1 if None in top else None
    statement = (
        "SELECT GROUPING(t.r_rank), t.r_rank, AVG(t.r_qualify), "
        "percentile_cont(0.5) WITHIN GROUP (ORDER BY t.r_qualify), AVG(t.r_touch), "
        "percentile_cont(0.5) WITHIN GROUP (ORDER BY t.r_touch) "
        "FROM (SELECT CASE WHEN g.r_key IS NULL THEN %s::int "
        "                  ELSE array_position(%s::text[], g.r_key::text) END AS r_rank, g.r_qualify, g.r_touch "
        f"      FROM ({inner}) g(r_key, r_qualify, r_touch)) t "
        "GROUP BY GROUPING SETS ((t.r_rank), ())"
    )
    by_key, other, total = {}, dict.fromkeys(_TIME_NAMES), dict.fromkeys(_TIME_NAMES)
    with connection.cursor() as cursor:
        cursor.execute(statement, [null_rank, [str(key) for key in keys], *params])
        for grouping, rank, *values in cursor.fetchall():
            times = dict(zip(_TIME_NAMES, values, strict=True))
            if grouping:
                total = times
            elif rank is None:
                other = times
            else:
                by_key[None if rank == null_rank else keys[rank - 1]] = times
    return by_key, other, total


def breakdown(leads, dimension, period):
    """One Row per group of ``dimension`` (the largest MAX_GROUPS, then 'Other'), as a
    ``Breakdown``: on PostgreSQL its ``total_times`` are the cohort's, from the same pass."""
    column = _GROUP_COLUMN[dimension]
    # The counts hashed by group over every lead, then the times (whose medians need
    # their rows sorted by group) over the qualified leads only: on PostgreSQL one pass
    # for the top groups, the others and the whole cohort.
    counts = {name: aggregate for name, aggregate in funnel_aggregates().items() if name not in _time_aggregates()}
    rows = list(leads.values(column).annotate(**counts).order_by("-captured", column))
    other_times = None
    if connection.vendor == "postgresql":
        timed, other_times, total_times = _group_times_postgresql(leads, column,
                                                                  [row[column] for row in rows[:MAX_GROUPS]])
    else:
        total_times = None
        timed = {row.pop(column): row for row in
                 leads.filter(qualified_at__isnull=False).values(column).annotate(**_time_aggregates()).order_by()}
    for row in rows:
        row.update(timed.get(row[column], {}))
    spend = spend_by(dimension, period)
    labels = _labels(dimension, [row[column] for row in rows])
    empty = {"source": _("No source"), "form": _("No form"), "utm_campaign": _("No campaign"),
             "interest": _("No interest given"), "rep": _("Unassigned")}[dimension]
    result = Breakdown()
    result.total_times = total_times
    for row in rows[:MAX_GROUPS]:
        key = row.pop(column)
        label = labels.get(key) or str(empty)
        result.append(_row(key, str(label), row, spend=None if spend is None else spend.get(key, Decimal("0"))))
    if len(rows) > MAX_GROUPS:
        if other_times is not None:
            # The counts of the others are sums of their groups'; their times came with the top's.
            rest = {name: sum(row[name] or 0 for row in rows[MAX_GROUPS:]) for name in counts}
            rest.update(other_times)
        else:
            others = leads.exclude(**{f"{column}__in": [r.key for r in result if r.key is not None]})
            if any(r.key is None for r in result):
                others = others.exclude(**{f"{column}__isnull": True})
            rest = others.aggregate(**funnel_aggregates())
        result.append(_row("", str(_("Other")), rest))
    return result


def months_between(period):
    first, after = period.months()
    months = []
    while first < after:
        months.append(first)
        first = (first + datetime.timedelta(days=32)).replace(day=1)
    return months


def _month_bounds(months, period):
    """The first instant of each month (local time), then of the month after the last."""
    tz = timezone.get_current_timezone()
    return [datetime.datetime.combine(day, datetime.time.min, tzinfo=tz) for day in [*months, period.months()[1]]]


LOST = (LeadStatus.DISQUALIFIED, LeadStatus.OUT_OF_FOCUS)


@dataclass
class Tally:
    """The counts of a cohort that one pass gives (``tally``), folded per figure."""

    total: dict
    reasons: dict  # (reason_id, status) -> leads disqualified or out of focus
    trend: dict  # (reason_id, month) -> the same, by month of capture
    quality: dict  # source_id -> [good fit, bad fit]


def tally(leads, period, months=None):
    """The funnel's counts and deal value, the reasons and their months, and the ratings by
    source, from one GROUP BY over the cohort (an index-only scan of ``lead_report_idx``): a
    few thousand groups at most (statuses × ratings × reasons × sources × months), added up
    here."""
    months = months_between(period) if months is None else months
    rows = (leads.annotate(r_reached=ExpressionWrapper(Q(qualified_at__isnull=False), output_field=BooleanField()),
                           r_month=MonthBucket("created_at", _month_bounds(months, period)))
            .values_list("status", "fit", "r_reached", "reason_id", "source_id", "r_month")
            .annotate(n=Count("*"), value=Sum("deal_value")).order_by())
    total = dict.fromkeys(("captured", "qualified", "converted", "disqualified", "out_of_focus", "new",
                           "good_fit", "bad_fit"), 0)
    total["deal_value"] = Decimal("0")
    result = Tally(total=total, reasons={}, trend={}, quality={})
    for status, fit, reached, reason_id, source_id, month, n, value in rows:
        total["captured"] += n
        if reached or status == LeadStatus.CONVERTED:
            total["qualified"] += n
        if status == LeadStatus.CONVERTED:
            total["converted"] += n
            total["deal_value"] += value or 0
        elif status in (LeadStatus.DISQUALIFIED, LeadStatus.OUT_OF_FOCUS, LeadStatus.NEW):
            total[status] += n
        if status in LOST:
            result.reasons[reason_id, status] = result.reasons.get((reason_id, status), 0) + n
            if 0 < month <= len(months):
                key = (reason_id, months[month - 1])
                result.trend[key] = result.trend.get(key, 0) + n
        if fit in ("good", "bad"):
            total[f"{fit}_fit"] += n
            counts = result.quality.setdefault(source_id, [0, 0])
            counts[fit == "bad"] += n
    return result


def _time_aggregates():
    return {
        "qualify_mean": Avg(_when(QUALIFY_TIMED, TO_QUALIFY)),
        "qualify_median": Median(_when(QUALIFY_TIMED, TO_QUALIFY)),
        "touch_mean": Avg(_when(TOUCHED, TO_TOUCH)),
        "touch_median": Median(_when(TOUCHED, TO_TOUCH)),
    }


def times(leads):
    """Mean and median times to qualify and to first touch (seconds) of the cohort: one
    pass over its qualified leads."""
    return leads.filter(qualified_at__isnull=False).aggregate(**_time_aggregates())


def funnel(leads, period, counts=None, cohort_times=None):
    """The cohort's funnel as one Row (``counts``: its ``tally``, ``cohort_times``: its
    ``times``, when already computed)."""
    counts = tally(leads, period) if counts is None else counts
    cohort_times = times(leads) if cohort_times is None else cohort_times
    return _row(None, str(_("All leads")), {**counts.total, **cohort_times}, spend=spend_total(period))


@dataclass
class ReasonRow:
    reason_id: int | None
    label: str
    status: str
    count: int


def reasons(counts):
    """Disqualified and out-of-focus leads of the cohort by reason, most frequent first."""
    keys = sorted(counts.reasons, key=lambda key: (-counts.reasons[key], key[0] is None, key[0] or 0, key[1]))
    labels = dict(Reason.objects.filter(pk__in=[reason_id for reason_id, _status in keys])
                  .values_list("pk", "label"))
    return [ReasonRow(reason_id, labels.get(reason_id, str(_("No reason"))), status, counts.reasons[reason_id, status])
            for reason_id, status in keys]


def reasons_trend(counts, reason_rows):
    """{reason label: {month: count}} for the most frequent reasons, by month of capture."""
    top = []
    for row in reason_rows:
        if row.reason_id not in top:
            top.append(row.reason_id)
    top = top[:TREND_REASONS]
    labels = {row.reason_id: row.label for row in reason_rows}
    series = {labels[pk]: {} for pk in top if pk in labels}
    for (reason_id, month), count in sorted(counts.trend.items(), key=lambda item: item[0][1]):
        if reason_id in top:
            series[labels[reason_id]][month] = count
    return series


def quality_by_source(counts):
    """Sales' ratings of the cohort by source: [(label, good, bad)]."""
    rows = sorted(counts.quality.items(), key=lambda item: (-item[1][1], -item[1][0], item[0] is None, item[0] or 0))
    labels = _labels("source", [source_id for source_id, _counts in rows])
    return [(labels.get(source_id) or str(_("No source")), good, bad) for source_id, (good, bad) in rows]


@dataclass
class RuleRow:
    rule_id: int
    name: str
    effect: str
    points: int
    matched: int
    qualified: int
    converted: int
    good_fit: int
    bad_fit: int

    @property
    def qualified_share(self):
        return _ratio(self.qualified, self.matched)

    @property
    def converted_share(self):
        return _ratio(self.converted, self.matched)

    @property
    def bad_fit_share(self):
        return _ratio(self.bad_fit, self.good_fit + self.bad_fit)


MAX_RULES = 63  # bits of LeadRuleMatches.mask


def _active_ruleset():
    from scoring.models import Ruleset

    return Ruleset.objects.filter(state=Ruleset.State.ACTIVE).prefetch_related("rules__reason").first()


def _report_rules(ruleset):
    return [rule for rule in ruleset.rules.all() if rule.active][:MAX_RULES]


def rule_matches_refresh(*, chunk_size=20000, now=None, limit=None):
    """Store, for every lead whose figures are missing or stale (never computed, computed
    for another ruleset, or changed since), which rules of the active ruleset it matches.
    Set-based: one INSERT … SELECT … ON CONFLICT per chunk of ids, the rules compiled to
    SQL by ``scoring.compiler``. Returns the number of leads refreshed."""
    from django.db import connection, transaction

    from scoring import services as scoring_services

    from .models import LeadRuleMatches

    ruleset = _active_ruleset()
    if ruleset is None:
        return 0
    now = now or timezone.now()
    rules = _report_rules(ruleset)
    compiled = scoring_services.compile_ruleset(ruleset, now=now)
    bits = [Case(When(compiled.condition(rule.to_engine()), then=Value(1 << i)), default=Value(0),
                 output_field=BigIntegerField()) for i, rule in enumerate(rules)]
    mask = sum(bits[1:], bits[0]) if bits else Value(0, output_field=BigIntegerField())
    fresh = LeadRuleMatches.objects.filter(lead=OuterRef("pk"), ruleset=ruleset,
                                           computed_at__gte=OuterRef("updated_at"))
    stale = Lead.objects.filter(~Exists(fresh)).order_by("pk")
    table = connection.ops.quote_name(LeadRuleMatches._meta.db_table)
    done, after = 0, 0
    while limit is None or done < limit:
        ids = list(stale.filter(pk__gt=after).values_list("pk", flat=True)[:chunk_size])
        if not ids:
            break
        select = (Lead.objects.filter(pk__in=ids).order_by()
                  .annotate(r_id=F("pk"), r_mask=mask).values_list("r_id", "r_mask"))
        sql, params = select.query.sql_with_params()
        # WHERE true: SQLite needs it to parse INSERT … SELECT … ON CONFLICT.
        statement = (
            f"INSERT INTO {table} (lead_id, mask, ruleset_id, computed_at) "
            f"SELECT x.r_id, x.r_mask, %s, %s FROM ({sql}) x WHERE true "
            f"ON CONFLICT (lead_id) DO UPDATE SET ruleset_id = excluded.ruleset_id, mask = excluded.mask, "
            f"computed_at = excluded.computed_at"
        )
        stamp = LeadRuleMatches._meta.get_field("computed_at").get_db_prep_save(now, connection)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(statement, [ruleset.pk, stamp, *params])
        done += len(ids)
        after = ids[-1]
    if limit is None:
        # Every stored match is current: sum them per day for the dashboard. Rebuilt on
        # each run, even one that refreshed nothing, so that a deleted lead or a
        # status change made without touching the lead's row is counted within a run.
        rule_match_days_rebuild(now=now)
    return done


class _HasBit(Func):
    """SQL: is bit ``bit`` of the integer ``expression`` set?"""

    template = "(%(expressions)s) <> 0"
    arg_joiner = " & "
    output_field = BooleanField()
    conditional = True

    def __init__(self, expression, bit):
        super().__init__(expression, Value(1 << bit, output_field=BigIntegerField()))


def rule_match_days_rebuild(*, now=None):
    """Rebuild ``RuleMatchDay`` from the stored rule matches of the active ruleset: per
    day of capture (in ``settings.TIME_ZONE``) and rule, the leads it matched and how
    many of them qualified, converted, or were rated good / bad fit, as they are now.
    One GROUP BY day over the leads and their matches; the rows are replaced in one
    transaction, so the dashboard reads either the old set or the new. Returns the
    number of days."""
    import zoneinfo

    from django.conf import settings
    from django.db.models.functions import TruncDate

    now = now or timezone.now()
    ruleset = _active_ruleset()
    if ruleset is None:
        RuleMatchDay.objects.all().delete()
        return 0
    rules = _report_rules(ruleset)
    mask = F("rule_matches__mask")
    outcomes = {"leads": Q(), "qualified": REACHED_QUALIFIED, "converted": CONVERTED, "good_fit": Q(fit="good"),
                "bad_fit": Q(fit="bad")}
    aggregates = {f"{name}_all": Count("id", filter=condition) if condition else Count("id")
                  for name, condition in outcomes.items()}
    for index in range(len(rules)):
        for name, condition in outcomes.items():
            aggregates[f"{name}_{index}"] = Count("id", filter=Q(_HasBit(mask, index)) & condition)
    day = TruncDate("created_at", tzinfo=zoneinfo.ZoneInfo(settings.TIME_ZONE))
    rows = (Lead.objects.filter(rule_matches__ruleset=ruleset).annotate(r_day=day).values("r_day")
            .annotate(**aggregates).order_by())
    with transaction.atomic():
        _report_settings()
        built = []
        for row in rows:
            for index in ["all", *range(len(rules))]:
                counts = {name: row[f"{name}_{index}"] for name in outcomes}
                if counts["leads"]:
                    built.append(RuleMatchDay(ruleset=ruleset, day=row["r_day"], rule_index=-1 if index == "all"
                                              else index, computed_at=now, **counts))
        RuleMatchDay.objects.all().delete()
        RuleMatchDay.objects.bulk_create(built, batch_size=5000)
    return len({row.day for row in built})


def _rule_effectiveness_by_day(ruleset, rules, period):
    """``rule_effectiveness`` of a whole period (no segment) from ``RuleMatchDay``; None
    when it was not built for this ruleset (or for this time zone's days)."""
    from django.conf import settings

    if timezone.get_current_timezone_name() != settings.TIME_ZONE:
        return None
    stored = RuleMatchDay.objects.filter(ruleset=ruleset)
    built_at = stored.aggregate(at=Max("computed_at"))["at"]
    if built_at is None:
        return None
    totals = {index: [0, 0, 0, 0, 0] for index in range(-1, len(rules))}
    sums = (stored.filter(day__gte=period.start, day__lte=period.end, rule_index__lt=len(rules))
            .values_list("rule_index").annotate(Sum("leads"), Sum("qualified"), Sum("converted"), Sum("good_fit"),
                                                Sum("bad_fit")).order_by())
    for index, *counts in sums:
        totals[index] = [int(count or 0) for count in counts]
    rows = [RuleRow(rule.pk, rule.name, rule.effect, rule.points, *totals[i]) for i, rule in enumerate(rules)]
    # The cohort's size is the funnel's (``_dashboard`` fills it in), counted now.
    return rows, {"covered": totals[-1][0], "cohort": None, "computed_at": built_at, "outcomes_at": built_at}


def rule_effectiveness(leads, *, period=None, base=None):
    """For each active rule of the active ruleset: the cohort leads it matched when last
    evaluated (``rule_matches_refresh``), and how many of them qualified, converted, or
    were rated good / bad fit; plus how many cohort leads have fresh figures.

    For a whole period (``period`` given, no segment ``base``) the sums come from
    ``RuleMatchDay``, rebuilt with the matches, so the outcomes are as of that rebuild
    (``coverage["outcomes_at"]``); otherwise from one query over the stored bit masks of
    the cohort's leads, with their outcomes now."""
    ruleset = _active_ruleset()
    if ruleset is None:
        return None, [], {}
    rules = _report_rules(ruleset)
    if period is not None and base is None:
        by_day = _rule_effectiveness_by_day(ruleset, rules, period)
        if by_day is not None:
            return ruleset, *by_day
    # The database groups the cohort by bit mask (one pass; tens of thousands of distinct
    # masks over a million leads), then those groups by each byte of their mask (a few
    # hundred rows): a rule's figures are the sums over the values of its byte that have
    # its bit. Plus one row (byte -1) for the coverage.
    groups = (
        leads.annotate(stored=FilteredRelation("rule_matches", condition=Q(rule_matches__ruleset=ruleset)))
        .values(r_mask=F("stored__mask"))
        .annotate(n=Count("*"), qualified=Count("id", filter=REACHED_QUALIFIED),
                  converted=Count("id", filter=CONVERTED), good=Count("id", filter=Q(fit="good")),
                  bad=Count("id", filter=Q(fit="bad")), computed_at=Max("stored__computed_at"))
        .order_by()
    )
    inner, params = groups.query.sql_with_params()
    by_byte = " UNION ALL ".join(
        f"SELECT {byte}, (g.r_mask >> {8 * byte}) & 255, SUM(g.n), SUM(g.qualified), SUM(g.converted), "
        f"SUM(g.good), SUM(g.bad), NULL FROM g WHERE g.r_mask IS NOT NULL GROUP BY 2"
        for byte in range((len(rules) + 7) // 8)
    )
    statement = (
        f"WITH g AS ({inner}) "
        f"SELECT -1, 0, SUM(g.n), SUM(CASE WHEN g.r_mask IS NULL THEN 0 ELSE g.n END), 0, 0, 0, "
        f"MAX(g.computed_at) FROM g" + (f" UNION ALL {by_byte}" if by_byte else "")
    )
    totals = [[0, 0, 0, 0, 0] for _rule in rules]
    coverage = {"covered": 0, "cohort": 0, "computed_at": None}
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        for byte, value, *counts, computed_at in cursor.fetchall():
            if byte == -1:
                coverage.update(cohort=int(counts[0] or 0), covered=int(counts[1] or 0),
                                computed_at=_from_db(computed_at))
                continue
            for bit in range(8):
                index = 8 * byte + bit
                if value & (1 << bit) and index < len(rules):
                    totals[index] = [total + int(count) for total, count in zip(totals[index], counts, strict=True)]
    return ruleset, [
        RuleRow(rule.pk, rule.name, rule.effect, rule.points, *totals[i]) for i, rule in enumerate(rules)
    ], coverage


def _from_db(value):
    """A timestamp a raw query returned (SQLite gives its text)."""
    if isinstance(value, str):
        value = parse_datetime(value)
        if timezone.is_naive(value):
            value = timezone.make_aware(value, datetime.UTC)
    return value


def requalification(*, period, base=None):
    """Leads requalified (disqualified → qualified by the requalification job) within the
    period, and how many of them are converted now."""
    start, end = period.bounds()
    came_back = LeadEvent.objects.filter(
        kind=LeadEvent.Kind.REQUALIFIED, to_status=LeadStatus.QUALIFIED, created_at__gte=start, created_at__lt=end,
    ).values("lead_id")
    base = Lead.objects.all() if base is None else base
    values = base.filter(pk__in=came_back).order_by().aggregate(
        requalified=Count("id"), converted=Count("id", filter=CONVERTED),
        deal_value=Sum("deal_value", filter=CONVERTED),
    )
    values["deal_value"] = values["deal_value"] or Decimal("0")
    values["conversion_rate"] = _ratio(values["converted"], values["requalified"])
    return values


@dataclass
class Dashboard:
    period: Period
    breakdown_by: str
    total: Row
    groups: list = field(default_factory=list)
    reasons: list = field(default_factory=list)
    reasons_trend: dict = field(default_factory=dict)
    months: list = field(default_factory=list)
    quality: list = field(default_factory=list)
    ruleset: object = None
    rules: list = field(default_factory=list)
    rules_coverage: dict = field(default_factory=dict)
    computed_at: object = None
    requalification: dict = field(default_factory=dict)


def dashboard(*, period, breakdown_by="", base=None, concurrent=None):
    """Every figure of the dashboard for ``period`` (and ``base``, e.g. a segment).

    The rule effectiveness, and the breakdown if any, are computed meanwhile on connections
    of their own, in threads, when ``concurrent`` (by default: on PostgreSQL outside a
    transaction, since another connection cannot see an open transaction's rows). Their
    snapshots are then a few milliseconds apart from the other figures'."""
    if breakdown_by not in BREAKDOWNS:
        raise ValueError(f"unknown breakdown {breakdown_by!r}")
    if concurrent is None:
        concurrent = connection.vendor == "postgresql" and not connection.in_atomic_block
    background = {}
    if concurrent:
        leads = cohort(period=period, base=base)
        background["rules"] = _on_another_connection(lambda: rule_effectiveness(leads, period=period, base=base),
                                                     name="dashboard-rules")
        if breakdown_by:
            background["groups"] = _on_another_connection(lambda: breakdown(leads, breakdown_by, period),
                                                          name="dashboard-breakdown")
    try:
        with transaction.atomic():
            _report_settings()
            return _dashboard(period=period, breakdown_by=breakdown_by, base=base, background=background)
    finally:
        for thread in background.values():
            thread.join()


def _report_settings():
    if connection.vendor == "postgresql":
        # Compiling these wide aggregates with LLVM costs more than running them; and the
        # dashboard already runs its passes at once on connections of their own, so
        # parallel workers for each would only fight them for the same cores.
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL jit = off")
            cursor.execute("SET LOCAL max_parallel_workers_per_gather = 0")


class _Background(threading.Thread):
    """``work()`` on this thread's own connection (closed afterwards), in the starting
    thread's language and time zone; ``result()`` waits for its value or raises its error."""

    def __init__(self, work, name):
        super().__init__(name=name, daemon=True)
        self.work, self.value, self.error = work, None, None
        self.language, self.timezone = translation.get_language(), timezone.get_current_timezone()

    def run(self):
        try:
            with translation.override(self.language), timezone.override(self.timezone), transaction.atomic():
                _report_settings()
                self.value = self.work()
        except Exception as exc:  # noqa: BLE001 - re-raised by the caller's thread
            self.error = exc
        finally:
            connection.close()  # this thread's own connection

    def result(self):
        self.join()
        if self.error is not None:
            raise self.error
        return self.value


def _on_another_connection(work, *, name):
    thread = _Background(work, name)
    thread.start()
    return thread


def _dashboard(*, period, breakdown_by, base, background):
    leads = cohort(period=period, base=base)
    months = months_between(period)
    counts = tally(leads, period, months)
    reason_rows = reasons(counts)
    requalified = requalification(period=period, base=base)
    if "groups" in background:
        groups = background["groups"].result()
    else:
        groups = breakdown(leads, breakdown_by, period) if breakdown_by else []
    # With a breakdown, the cohort's times came with the groups' (PostgreSQL).
    total = funnel(leads, period, counts, cohort_times=getattr(groups, "total_times", None))
    ruleset, rule_rows, coverage = background["rules"].result() if "rules" in background else \
        rule_effectiveness(leads, period=period, base=base)
    if coverage and coverage.get("cohort") is None:
        coverage["cohort"] = total.captured
    return Dashboard(
        period=period, breakdown_by=breakdown_by, total=total, groups=groups, reasons=reason_rows,
        reasons_trend=reasons_trend(counts, reason_rows), months=months, quality=quality_by_source(counts),
        ruleset=ruleset, rules=rule_rows, rules_coverage=coverage, requalification=requalified,
    )
