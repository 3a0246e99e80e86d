"""The dashboard pages: the figures of ``leads.reports`` as SVG charts, tables and CSV."""

import csv
from dataclasses import dataclass
from decimal import Decimal

from django import forms
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse
from django.shortcuts import render
from django.utils import formats, timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from . import charts, reports, roles, spreadsheets

MAX_PERIOD_DAYS = 3 * 366


class DashboardForm(forms.Form):
    start = forms.DateField(label=gettext_lazy("From"), required=False,
                            widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(label=gettext_lazy("To"), required=False, widget=forms.DateInput(attrs={"type": "date"}))
    breakdown = forms.ChoiceField(label=gettext_lazy("Break down by"), required=False,
                                  choices=list(reports.BREAKDOWNS.items()))
    segment = forms.TypedChoiceField(label=gettext_lazy("Segment"), required=False, coerce=int, empty_value=None)

    def __init__(self, *args, segments=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.segments = {segment.pk: segment for segment in segments}
        self.fields["segment"].choices = [("", _("All leads"))] + [(pk, s.name) for pk, s in self.segments.items()]

    def clean(self):
        data = super().clean()
        default = reports.Period.default()
        start, end = data.get("start") or default.start, data.get("end") or default.end
        if start > end:
            raise forms.ValidationError(_("The period must start before it ends."))
        if (end - start).days > MAX_PERIOD_DAYS:
            raise forms.ValidationError(_("Choose a period of at most three years."))
        data["period"] = reports.Period(start=start, end=end)
        data["segment_obj"] = self.segments.get(data.get("segment"))
        return data

    def clean_defaults(self):
        """The figures of the default period, when the page is opened without parameters."""
        self.cleaned_data = {"breakdown": "", "segment_obj": None, "period": reports.Period.default()}
        return self.cleaned_data


# --- Formatting -----------------------------------------------------------------------------


def _fmt(kind, value):
    if value is None:
        return "–"
    # number_format cuts extra decimals off; round first so 1.99 shows as 2.0.
    if kind == "pct":
        return formats.number_format(round(Decimal(value) * 100, 1), 1) + " %"
    if kind == "money":
        return formats.number_format(round(Decimal(value), 2), 2, use_l10n=True, force_grouping=True)
    if kind == "hours":
        return formats.number_format(round(Decimal(value) / 3600, 1), 1)
    if kind == "int":
        return formats.number_format(value, 0, force_grouping=True)
    return str(value)


def _raw(kind, value, number=str):
    """CSV cells: plain numbers (no grouping; ``number`` puts the reader's decimal mark),
    hours for durations, fractions for rates."""
    if value is None:
        return ""
    if kind == "hours":
        return number(f"{value / 3600:.2f}")
    if kind == "pct":
        return number(f"{Decimal(value):.4f}")
    if kind == "money":
        return number(f"{Decimal(value):.2f}")
    return str(value)


@dataclass
class Chart:
    slug: str
    title: str
    description: str
    svg: str
    columns: list  # [(header, kind)]
    rows: list  # raw values

    @property
    def has_data(self):
        """Whether the chart has a figure to draw: a row with a number other than 0 (a
        chart of zeros is a row of slivers, and says less than a sentence)."""
        return any(value not in (None, 0) for row in self.rows
                   for (_header, kind), value in zip(self.columns, row, strict=True) if kind != "text")

    @property
    def table(self):
        return [[_fmt(kind, value) for (_header, kind), value in zip(self.columns, row, strict=True)]
                for row in self.rows]

    def csv_rows(self, number=str):
        yield [str(header) for header, _kind in self.columns]
        for row in self.rows:
            yield [_raw(kind, value, number) for (_header, kind), value in zip(self.columns, row, strict=True)]


def _hours(seconds):
    return None if seconds is None else round(seconds / 3600, 1)


def build_charts(data):
    """The charts of a ``reports.Dashboard``, in page order."""
    total = data.total
    result = []
    stages = [(_("Captured"), total.captured), (_("Qualified"), total.qualified), (_("Converted"), total.converted)]
    lost = [(_("Disqualified"), total.disqualified), (_("Out of focus"), total.out_of_focus),
            (_("Not evaluated yet"), total.new)]
    result.append(Chart(
        "funnel", _("Funnel"),
        _("Captured %(captured)s, qualified %(qualified)s, converted %(converted)s leads.")
        % {"captured": total.captured, "qualified": total.qualified, "converted": total.converted},
        charts.funnel(stages, title=_("Funnel"), desc=_("Leads at each stage of the period's cohort.")),
        [(_("Stage"), "text"), (_("Leads"), "int"), (_("Share of captured"), "pct"),
         (_("Rate from the previous stage"), "pct")],
        [[stages[0][0], total.captured, reports._ratio(total.captured, total.captured), None],
         [stages[1][0], total.qualified, total.qualification_rate, total.qualification_rate],
         [stages[2][0], total.converted, total.overall_rate, total.conversion_rate]]
        + [[label, value, reports._ratio(value, total.captured), None] for label, value in lost],
    ))
    speed_rows = [[_("Time to qualify"), total.qualify_mean, total.qualify_median],
                  [_("Time to first touch"), total.touch_mean, total.touch_median]]
    result.append(Chart(
        "speed", _("Speed (hours)"), _("Mean and median hours from capture to qualification, and from "
                                       "qualification to a rep's first action."),
        charts.bars([row[0] for row in speed_rows],
                    [(_("Mean"), [_hours(r[1]) for r in speed_rows]),
                     (_("Median"), [_hours(r[2]) for r in speed_rows])],
                    title=_("Speed (hours)"), desc=_("Mean and median, in hours.")),
        [(_("Measure"), "text"), (_("Mean (hours)"), "hours"), (_("Median (hours)"), "hours")], speed_rows,
    ))
    money_rows = [[_("Spend"), total.spend, None], [_("Cost per lead"), total.cost_per_lead, None],
                  [_("Cost per qualified lead"), total.cost_per_qualified, None],
                  [_("Deal value of converted leads"), total.deal_value, None], [_("ROI"), None, total.roi]]
    result.append(Chart(
        "money", _("Cost and return"),
        _("Spend %(spend)s, deal value %(value)s.") % {"spend": _fmt("money", total.spend),
                                                        "value": _fmt("money", total.deal_value)},
        charts.bars([_("Spend"), _("Deal value of converted leads")],
                    [(_("Amount"), [float(total.spend or 0), float(total.deal_value or 0)])],
                    title=_("Cost and return"), desc=_("Spend and the deal value it brought.")),
        [(_("Measure"), "text"), (_("Amount"), "money"), (_("Ratio"), "pct")], money_rows,
    ))
    if data.groups:
        dimension = str(reports.BREAKDOWNS[data.breakdown_by])
        groups = data.groups
        result.append(Chart(
            "breakdown", _("By %(dimension)s") % {"dimension": dimension.lower()},
            _("Captured, qualified and converted leads per %(dimension)s.") % {"dimension": dimension.lower()},
            charts.bars([g.label for g in groups],
                        [(_("Captured"), [g.captured for g in groups]), (_("Qualified"), [g.qualified for g in groups]),
                         (_("Converted"), [g.converted for g in groups])],
                        title=dimension, desc=_("Leads per group.")),
            [(dimension, "text"), (_("Captured"), "int"), (_("Qualified"), "int"), (_("Converted"), "int"),
             (_("Disqualified"), "int"), (_("Out of focus"), "int"), (_("Qualification rate"), "pct"),
             (_("Conversion rate"), "pct"), (_("Mean time to qualify (h)"), "hours"),
             (_("Median time to qualify (h)"), "hours"), (_("Mean time to first touch (h)"), "hours"),
             (_("Median time to first touch (h)"), "hours"), (_("Spend"), "money"), (_("Cost per lead"), "money"),
             (_("Cost per qualified lead"), "money"), (_("Deal value"), "money"), (_("ROI"), "pct")],
            [[g.label, g.captured, g.qualified, g.converted, g.disqualified, g.out_of_focus, g.qualification_rate,
              g.conversion_rate, g.qualify_mean, g.qualify_median, g.touch_mean, g.touch_median, g.spend,
              g.cost_per_lead, g.cost_per_qualified, g.deal_value, g.roi] for g in groups],
        ))
    status_label = {"disqualified": _("Disqualified"), "out_of_focus": _("Out of focus")}
    result.append(Chart(
        "reasons", _("Reasons"), _("Why leads of the period were disqualified or put out of focus."),
        charts.bars([r.label for r in data.reasons], [(_("Leads"), [r.count for r in data.reasons])],
                    title=_("Reasons"), desc=_("Leads per reason.")),
        [(_("Reason"), "text"), (_("Status"), "text"), (_("Leads"), "int")],
        [[r.label, status_label.get(r.status, r.status), r.count] for r in data.reasons],
    ))
    month_labels = [formats.date_format(m, "M Y") for m in data.months]
    trend = [(name, [by_month.get(m, 0) for m in data.months]) for name, by_month in data.reasons_trend.items()]
    result.append(Chart(
        "reasons-trend", _("Reasons over time"), _("The most frequent reasons, per month of capture."),
        charts.lines(month_labels, trend, title=_("Reasons over time"), desc=_("Leads per reason and month.")),
        [(_("Month"), "text")] + [(name, "int") for name, _values in trend],
        [[month_labels[i]] + [values[i] for _name, values in trend] for i in range(len(data.months))],
    ))
    result.append(Chart(
        "quality", _("Sales' quality ratings by source"), _("Leads rated a good or a bad fit by sales, per source."),
        charts.bars([q[0] for q in data.quality], [(_("Good fit"), [q[1] for q in data.quality]),
                                                   (_("Bad fit"), [q[2] for q in data.quality])],
                    title=_("Quality ratings by source"), desc=_("Good and bad fit ratings per source.")),
        [(_("Source"), "text"), (_("Good fit"), "int"), (_("Bad fit"), "int")], [list(q) for q in data.quality],
    ))
    rules = data.rules
    result.append(Chart(
        "rules", _("Rule effectiveness"),
        _("For each rule of the active ruleset: the period's leads it matches now, and how they ended up."),
        charts.bars([r.name for r in rules], [(_("Matched"), [r.matched for r in rules]),
                                              (_("Qualified"), [r.qualified for r in rules]),
                                              (_("Converted"), [r.converted for r in rules]),
                                              (_("Bad fit"), [r.bad_fit for r in rules])],
                    title=_("Rule effectiveness"), desc=_("Leads each rule matched, and their outcomes.")),
        [(_("Rule"), "text"), (_("Matched"), "int"), (_("Qualified"), "int"), (_("Share qualified"), "pct"),
         (_("Converted"), "int"), (_("Share converted"), "pct"), (_("Good fit"), "int"), (_("Bad fit"), "int"),
         (_("Share of ratings that are bad fit"), "pct")],
        [[r.name, r.matched, r.qualified, r.qualified_share, r.converted, r.converted_share, r.good_fit,
          r.bad_fit, r.bad_fit_share] for r in rules],
    ))
    rq = data.requalification
    result.append(Chart(
        "requalification", _("Requalification"),
        _("Disqualified leads that came back qualified in the period, and how many of those converted."),
        charts.funnel([(_("Requalified"), rq["requalified"]), (_("Then converted"), rq["converted"])],
                      title=_("Requalification"), desc=_("Requalified leads and their conversions.")),
        [(_("Measure"), "text"), (_("Leads"), "int"), (_("Rate"), "pct")],
        [[_("Requalified"), rq["requalified"], None], [_("Then converted"), rq["converted"], rq["conversion_rate"]]],
    ))
    return result


# --- Views ----------------------------------------------------------------------------------


def _dashboard_for(request):
    if not roles.can_see_reports(request.user):
        raise PermissionDenied
    from nurturing.selectors import InvalidSegment, segment_leads, segments_for

    form = DashboardForm(request.GET or None, segments=segments_for(request.user))
    if request.GET and not form.is_valid():
        return form, None, None
    cleaned = form.cleaned_data if request.GET else form.clean_defaults()
    base, error = None, None
    if cleaned.get("segment_obj"):
        try:
            base = segment_leads(segment=cleaned["segment_obj"], user=request.user)
        except InvalidSegment:
            error = _("This segment's saved filters are no longer valid; edit it in admin.")
            return form, None, error
    data = _cached_dashboard(cleaned, base)
    return form, data, error


# The figures of one period / breakdown / segment are kept this long, so a page, its
# reload and its CSV downloads show the same numbers and compute them once.
CACHE_SECONDS = 300


def _cached_dashboard(cleaned, base):
    from django.core.cache import cache

    segment = cleaned.get("segment_obj")
    period = cleaned["period"]
    key = ":".join([
        "funil:dashboard:v1", period.start.isoformat(), period.end.isoformat(), cleaned.get("breakdown") or "-",
        f"{segment.pk}@{segment.updated_at.timestamp()}" if segment else "-",
    ])
    data = cache.get(key)
    if data is None:
        data = reports.dashboard(period=period, breakdown_by=cleaned.get("breakdown") or "", base=base)
        data.computed_at = timezone.now()
        cache.set(key, data, CACHE_SECONDS)
    return data


@login_required
def dashboard(request):
    """The funnel, speed, money, reasons, ratings and rules of a period, as charts and tables."""
    form, data, error = _dashboard_for(request)
    context = {"form": form, "data": data, "error": error, "charts": build_charts(data) if data else [],
               "query": request.GET.urlencode()}
    return render(request, "leads/dashboard.html", context)


@login_required
def dashboard_csv(request, slug):
    """One chart's table as CSV, for the same period, breakdown and segment."""
    form, data, error = _dashboard_for(request)
    if data is None:
        return HttpResponse(error or "; ".join(m for ms in form.errors.values() for m in ms), status=400,
                            content_type="text/plain; charset=utf-8")
    chart = next((c for c in build_charts(data) if c.slug == slug), None)
    if chart is None:
        raise Http404
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    stamp = f"{data.period.start:%Y%m%d}-{data.period.end:%Y%m%d}"
    response["Content-Disposition"] = f'attachment; filename="funil-{slug}-{stamp}.csv"'
    # For the person's spreadsheet: their language's delimiter and decimal mark, and a BOM.
    spreadsheet = spreadsheets.conventions()
    response.write(spreadsheets.BOM)
    writer = csv.writer(response, delimiter=spreadsheet.delimiter)
    for row in chart.csv_rows(number=spreadsheet.number):
        writer.writerow(row)
    return response
