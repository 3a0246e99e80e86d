"""Admin for rulesets: drafts are edited, previewed (the impact of activating them,
computed in the database) and activated; active and archived rulesets are read-only
and can be copied into a new draft. Rescoring jobs show their progress."""

import json
from decimal import Decimal

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import models
from django.db.models import Count, Q
from django.http import HttpResponseNotAllowed
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html_join
from django.utils.safestring import mark_safe
from django.utils.translation import gettext_lazy as _

from leads.models import LeadStatus, Reason, Temperature

from . import engine, services
from .forms import RuleForm, show_value
from .labels import OPERATOR_LABELS, criterion, field_label, value_text
from .models import RequalificationSchedule, RescoreJob, Rule, Ruleset

STATUS_ORDER = [choice for choice, _label in LeadStatus.choices]
TEMPERATURE_ORDER = ["hot", "warm", "cold"]


class RuleInline(admin.StackedInline):
    """Each rule on two short lines, what it looks at and what it does, so that every box
    shows its words whole on a laptop's screen (eleven columns did not fit in 1366 px)."""

    model = Rule
    form = RuleForm
    fieldsets = [(None, {"fields": [
        ("name", "field", "operator", "value", "window_days"), ("effect", "points", "reason", "order", "active"),
    ]})]
    # An active or archived ruleset shows its rules read-only, in the same words.
    read_only_fieldsets = [(None, {"fields": [
        ("name", "field_words", "operator", "value_words", "window_days"),
        ("effect", "points", "reason", "order", "active"),
    ]})]
    ordering = ["order", "id"]
    extra = 1

    def _editable(self, obj):
        return obj is None or obj.state == Ruleset.State.DRAFT

    def has_add_permission(self, request, obj=None):
        return self._editable(obj) and super().has_add_permission(request, obj)

    def has_change_permission(self, request, obj=None):
        return self._editable(obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return self._editable(obj) and super().has_delete_permission(request, obj)

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        field = super().formfield_for_dbfield(db_field, request, **kwargs)
        if db_field.name == "reason" and field is not None:
            # Reasons are edited in their own admin; a rule's row has no room for the icons.
            field.widget.can_add_related = field.widget.can_change_related = False
            field.widget.can_view_related = field.widget.can_delete_related = False
        return field

    def get_extra(self, request, obj=None, **kwargs):
        return 0 if obj is not None and obj.rules.exists() else self.extra

    def get_fieldsets(self, request, obj=None):
        return self.fieldsets if self._editable(obj) else self.read_only_fieldsets

    def get_readonly_fields(self, request, obj=None):
        fields = super().get_readonly_fields(request, obj)
        return fields if self._editable(obj) else [*fields, "field_words", "value_words"]

    @admin.display(description=_("field"))
    def field_words(self, rule):
        return field_label(rule.field)

    @admin.display(description=_("value"))
    def value_words(self, rule):
        return show_value(rule.value, rule.field, rule.operator)


@admin.register(Ruleset)
class RulesetAdmin(admin.ModelAdmin):
    list_display = ["name", "version", "state", "thresholds", "activated_at", "rule_count", "created_at"]
    list_filter = ["state"]
    search_fields = ["name", "description"]
    inlines = [RuleInline]
    actions = ["duplicate_as_draft"]
    readonly_fields = ["state", "version", "activated_at", "created_at", "latest_jobs"]
    fieldsets = [
        (None, {"fields": ["name", "description"]}),
        (_("Thresholds"), {"fields": [("qualify_threshold", "warm_threshold", "hot_threshold")]}),
        (_("Engagement"), {"fields": [
            "engagement_half_life_days", ("submission_points", "email_open_points", "email_click_points"),
        ]}),
        (_("State"), {"fields": [("state", "version", "activated_at", "created_at"), "latest_jobs"]}),
    ]
    formfield_overrides = {models.TextField: {"widget": forms.Textarea(attrs={"rows": 3, "cols": 80})}}
    change_form_template = "admin/scoring/ruleset/change_form.html"

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(
            rules_total=Count("rules"), rules_active=Count("rules", filter=Q(rules__active=True))
        )

    # State never changes by hand: drafts are edited, the rest is read-only.
    def has_change_permission(self, request, obj=None):
        if obj is not None and obj.state != Ruleset.State.DRAFT:
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        if obj is not None and obj.state != Ruleset.State.DRAFT:
            return False
        return super().has_delete_permission(request, obj)

    def may_activate(self, request):
        return super().has_change_permission(request)

    def save_model(self, request, obj, form, change):
        # A draft reads as the next version of its name; activation confirms the number.
        if not change or "name" in form.changed_data:
            latest = Ruleset.objects.filter(name=obj.name).exclude(pk=obj.pk).order_by("-version").first()
            obj.version = latest.version + 1 if latest else 1
        super().save_model(request, obj, form, change)

    @admin.display(description=_("qualify / warm / hot"))
    def thresholds(self, obj):
        return f"{obj.qualify_threshold} / {obj.warm_threshold} / {obj.hot_threshold}"

    @admin.display(description=_("rules (active)"), ordering="rules_total")
    def rule_count(self, obj):
        return f"{obj.rules_total} ({obj.rules_active})"

    @admin.display(description=_("rescoring jobs"))
    def latest_jobs(self, obj):
        jobs = list(obj.jobs.order_by("-created_at", "-id")[:5]) if obj.pk else []
        if not jobs:
            return "—"
        return format_html_join(
            mark_safe("<br>"), '<a href="{}">#{} · {} · {} · {}</a>',
            ((reverse("admin:scoring_rescorejob_progress", args=[job.pk]), job.pk, job.get_kind_display(),
              job.get_status_display(), date_format(timezone.localtime(job.created_at), "SHORT_DATETIME_FORMAT"))
             for job in jobs),
        )

    @admin.action(description=_("Duplicate as new draft"), permissions=["add"])
    def duplicate_as_draft(self, request, queryset):
        copies = [services.ruleset_duplicate(ruleset=ruleset) for ruleset in queryset.order_by("pk")]
        self.message_user(
            request, _("%(count)s new draft(s) created: %(names)s") % {
                "count": len(copies), "names": ", ".join(str(copy) for copy in copies)}, messages.SUCCESS,
        )

    # --- Custom views -----------------------------------------------------------------

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<int:pk>/impact/", view(self.impact_view), name="scoring_ruleset_impact"),
            path("<int:pk>/activate/", view(self.activate_view), name="scoring_ruleset_activate"),
            path("<int:pk>/duplicate/", view(self.duplicate_view), name="scoring_ruleset_duplicate"),
            *super().get_urls(),
        ]

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        context.update(
            operator_help=[(OPERATOR_LABELS[operator], operator) for operator in engine.OPERATORS],
            attribute_prefix_json=json.dumps(engine.ATTRIBUTE_PREFIX),
            example_low=value_text(5000), example_number=value_text(20000),
            example_decimal=value_text(Decimal("20000.50")),
            engagement_fields_json=json.dumps(sorted(engine.ENGAGEMENT_FIELDS)),
            may_activate=obj is not None and obj.state != Ruleset.State.ACTIVE and self.may_activate(request),
            may_duplicate=obj is not None and self.has_add_permission(request),
        )
        return super().render_change_form(request, context, add=add, change=change, form_url=form_url, obj=obj)

    def impact_view(self, request, pk):
        ruleset = get_object_or_404(Ruleset, pk=pk)
        if not self.has_view_permission(request, ruleset):
            raise PermissionDenied
        impact = services.ruleset_impact(ruleset=ruleset, samples=5)
        status_table = move_table(impact["status"], STATUS_ORDER, LeadStatus)
        temperature_table = move_table(impact["temperature"], TEMPERATURE_ORDER, Temperature, temperature_tone)
        rules = services.ruleset_to_engine(ruleset)
        now = timezone.now()
        samples = [
            {"from": LeadStatus(old).label, "to": LeadStatus(new).label, "count": impact["status"][(old, new)],
             "tone": status_tone(old, new),
             "leads": [sample_why(lead, services.lead_evaluate(lead=lead, rules=rules, now=now), ruleset)
                       for lead in leads]}
            for (old, new), leads in sorted(impact["samples"].items(),
                                            key=lambda item: -impact["status"][item[0]])
        ]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts, "title": _("Impact of activating %(ruleset)s") % {"ruleset": ruleset},
            "ruleset": ruleset, "active": Ruleset.objects.filter(state=Ruleset.State.ACTIVE).first(),
            "status_table": status_table, "temperature_table": temperature_table, "samples": samples,
            "total": status_table["total"], "status_moves": status_table["moved"],
            "temperature_moves": temperature_table["moved"],
            "rules": [rule_summary(rule) for rule in ruleset.rules.select_related("reason").order_by("order", "id")],
            "may_activate": ruleset.state != Ruleset.State.ACTIVE and self.may_activate(request),
        }
        return TemplateResponse(request, "admin/scoring/ruleset/impact.html", context)

    def activate_view(self, request, pk):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        ruleset = get_object_or_404(Ruleset, pk=pk)
        if not self.may_activate(request):
            raise PermissionDenied
        try:
            job = services.ruleset_activate(ruleset=ruleset, actor=request.user)
        except ValueError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return redirect("admin:scoring_ruleset_change", ruleset.pk)
        ruleset.refresh_from_db()
        self.log_change(request, ruleset, _("Activated; rescoring job #%(job)s.") % {"job": job.pk})
        self.message_user(request, _("%(ruleset)s is active. Every lead is being rescored.") % {
            "ruleset": ruleset}, messages.SUCCESS)
        return redirect("admin:scoring_rescorejob_progress", job.pk)

    def duplicate_view(self, request, pk):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        ruleset = get_object_or_404(Ruleset, pk=pk)
        if not self.has_add_permission(request):
            raise PermissionDenied
        copy = services.ruleset_duplicate(ruleset=ruleset)
        self.log_addition(request, copy, _("Copied from %(ruleset)s.") % {"ruleset": ruleset})
        self.message_user(request, _("New draft %(copy)s, copied from %(ruleset)s.") % {
            "copy": copy, "ruleset": ruleset}, messages.SUCCESS)
        return redirect("admin:scoring_ruleset_change", copy.pk)


def status_tone(old, new):
    """How a status move reads for sales: into qualified a gain, out of it a loss."""
    if new == LeadStatus.QUALIFIED:
        return "gain"
    if old == LeadStatus.QUALIFIED:
        return "loss"
    return "shift"


def temperature_tone(old, new):
    rank = {"cold": 0, "warm": 1, "hot": 2}
    return "gain" if rank.get(new, 0) > rank.get(old, 0) else "loss"


TONE_RGB = {"gain": "46, 125, 50", "loss": "186, 33, 33", "shift": "201, 138, 0"}


def move_table(moves, order, choices, tone=status_tone):
    """{(from, to): count} as a from → to matrix: rows, column totals, the total and how
    many move (off the diagonal). A moving cell is shaded by its share of the largest
    move, green when it is a gain for sales, red a loss, amber a shift between the two."""
    values = [value for value in order if any(value in move for move in moves)] or list(order)
    values += sorted({value for move in moves for value in move} - set(values))
    largest = max([count for (old, new), count in moves.items() if old != new] or [1])
    rows = []
    for old in values:
        cells = []
        for new in values:
            count = moves.get((old, new), 0)
            cell = {"count": count, "same": old == new, "tone": "", "style": ""}
            if count and old != new:
                cell["tone"] = tone(old, new)
                alpha = 0.15 + 0.7 * count / largest
                color = "#fff" if alpha > 0.5 else "inherit"
                cell["style"] = f"background: rgba({TONE_RGB[cell['tone']]}, {alpha:.2f}); color: {color}"
                cell["title"] = f"{_label(choices, old)} → {_label(choices, new)}: {count}"
            cells.append(cell)
        rows.append({"label": _label(choices, old), "cells": cells, "total": sum(cell["count"] for cell in cells)})
    columns = [_label(choices, value) for value in values]
    after = [sum(moves.get((old, new), 0) for old in values) for new in values]
    total = sum(moves.values())
    moved = sum(count for (old, new), count in moves.items() if old != new)
    return {"columns": columns, "rows": rows, "after": after, "total": total, "moved": moved}


def _label(choices, value):
    try:
        return choices(value).label
    except ValueError:
        return value


def sample_why(lead, verdict, ruleset):
    """A sample lead with what the draft would give it and why, in a line."""
    reasons = dict(Reason.objects.values_list("slug", "label"))
    knock_out = next((item for item in verdict.explanation if item["effect"] in (Rule.Effect.OUT_OF_FOCUS,
                                                                                 Rule.Effect.DISQUALIFIED)), None)
    if knock_out:
        why = _("%(rule)s (%(field)s: %(seen)s) → %(reason)s") % {
            "rule": knock_out["name"], "field": field_label(knock_out["field"]), "seen": seen_text(knock_out),
            "reason": reasons.get(knock_out["reason"], knock_out["reason"])}
    elif verdict.status == LeadStatus.QUALIFIED:
        why = _("%(score)s points, at least %(qualify)s") % {"score": verdict.score,
                                                              "qualify": ruleset.qualify_threshold}
    else:
        why = _("%(score)s points, below %(qualify)s") % {"score": verdict.score, "qualify": ruleset.qualify_threshold}
    # The engagement line has no rule behind it: it reads as on the lead's page.
    points = [f"{item['name'] if item.get('field') else _('Recent engagement')} {item['points']:+d}"
              for item in verdict.explanation if item["effect"] == Rule.Effect.POINTS and item["points"]]
    return {"lead": lead, "old_score": lead.score, "new_score": verdict.score, "why": why,
            "points": ", ".join(points)}


def seen_text(item):
    """The lead's value a rule saw: numbers in the reader's format, "—" for nothing."""
    seen = item.get("seen")
    if seen is None or seen == "":
        return "—"
    if item.get("field") in engine.NUMBER_FIELDS and engine.as_number(seen) is not None:
        return value_text(engine.as_number(seen))
    return seen


def rule_summary(rule):
    """A rule of the impact page in words: "State (UF) is not one of SP", "Email clicks in
    the last 14 days is at least 2"."""
    if rule.effect == Rule.Effect.POINTS:
        effect = f"{rule.points:+d}"
    else:
        effect = f"{rule.get_effect_display()} ({rule.reason})" if rule.reason_id else rule.get_effect_display()
    return {"name": rule.name, "criterion": criterion(rule.field, rule.operator, rule.value, rule.window_days),
            "effect": effect, "active": rule.active}


# --- Rescoring jobs -----------------------------------------------------------------------


@admin.register(RescoreJob)
class RescoreJobAdmin(admin.ModelAdmin):
    list_display = ["number", "kind", "ruleset", "status", "progress_display", "leads_seen", "leads_changed",
                    "status_changes", "created_at", "duration_display"]
    list_filter = ["status", "kind"]
    list_select_related = ["ruleset"]
    search_fields = ["ruleset__name"]
    date_hierarchy = "created_at"

    # Jobs are written by the services only.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description=_("job"), ordering="pk")
    def number(self, obj):
        return f"#{obj.pk}"

    @admin.display(description=_("progress"))
    def progress_display(self, obj):
        return f"{obj.progress}%"

    @admin.display(description=_("duration"))
    def duration_display(self, obj):
        return job_duration(obj) or "—"

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<int:pk>/progress/", view(self.progress_view), name="scoring_rescorejob_progress"),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        # The read-only page of a job is its progress page.
        if str(object_id).isdigit():
            return redirect("admin:scoring_rescorejob_progress", int(object_id))
        return super().change_view(request, object_id, form_url, extra_context)

    def progress_view(self, request, pk):
        job = get_object_or_404(RescoreJob.objects.select_related("ruleset"), pk=pk)
        if not self.has_view_permission(request, job):
            raise PermissionDenied
        now = timezone.now()
        pending_grace, heartbeat_timeout = services.sweep_timeouts()
        unfinished = job.status in (RescoreJob.Status.PENDING, RescoreJob.Status.RUNNING)
        waiting = job.status == RescoreJob.Status.PENDING and now - job.created_at > pending_grace
        last_progress = job.heartbeat_at or job.started_at
        stalled = (job.status == RescoreJob.Status.RUNNING and last_progress is not None
                   and now - last_progress > heartbeat_timeout)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts, "title": _("Rescoring job #%(job)s") % {"job": job.pk}, "job": job,
            "refresh": unfinished,
            "waiting": waiting, "stalled": stalled, "duration": job_duration(job, now=now),
            "status_moves": transition_rows(job.transitions, "status", LeadStatus),
            "temperature_moves": transition_rows(job.transitions, "temperature", Temperature),
        }
        return TemplateResponse(request, "admin/scoring/rescorejob/progress.html", context)


def transition_rows(transitions, kind, choices):
    """job.transitions keys "status:new>qualified" as rows (from, to, count), biggest first."""
    rows = []
    for key, count in transitions.items():
        prefix, _sep, move = key.partition(":")
        if prefix != kind or ">" not in move:
            continue
        old, new = move.split(">", 1)
        rows.append({"from": _label(choices, old), "to": _label(choices, new), "count": count})
    return sorted(rows, key=lambda row: (-row["count"], str(row["from"]), str(row["to"])))


def job_duration(job, *, now=None):
    if job.started_at is None:
        return ""
    end = job.finished_at or (now or timezone.now())
    seconds = max(0, int((end - job.started_at).total_seconds()))
    if not seconds:
        return "< 1 s"
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {seconds:02d} s"
    return f"{seconds} s"


class RequalificationScheduleForm(forms.ModelForm):
    days = forms.TypedMultipleChoiceField(
        label=_("Days"), choices=RequalificationSchedule.WEEKDAYS, coerce=int, widget=forms.CheckboxSelectMultiple,
        error_messages={"required": _("Choose at least one day.")},
    )
    at = forms.TimeField(label=_("Time"), widget=forms.TimeInput(format="%H:%M", attrs={"type": "time"}))

    class Meta:
        model = RequalificationSchedule
        fields = ["enabled"]
        labels = {"enabled": _("Requalify leads on this schedule")}
        help_texts = {"enabled": _("Untick to stop the scheduled requalification (manage.py requalify still runs "
                                   "it by hand).")}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            days, at = self.instance.days_and_time()
            self.fields["days"].initial = sorted(days)
            self.fields["at"].initial = at
        self.fields["at"].help_text = _("In the time zone %(zone)s.") % {"zone": settings.CELERY_TIMEZONE}


@admin.register(RequalificationSchedule)
class RequalificationScheduleAdmin(admin.ModelAdmin):
    """When the daily requalification runs, as days and a time: the one beat entry
    marketers may change (the other periodic jobs are the operators')."""

    form = RequalificationScheduleForm
    fields = ["enabled", "days", "at", "next_run", "last_run"]
    readonly_fields = ["next_run", "last_run"]

    def get_queryset(self, request):
        return super().get_queryset(request).filter(task=services.REQUALIFY_TASK)

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def changelist_view(self, request, extra_context=None):
        """There is one schedule: open it (created with the default if beat never ran)."""
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        task = services.requalify_schedule()
        return redirect("admin:scoring_requalificationschedule_change", task.pk)

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        services.requalify_schedule_set(days=data["days"], at=data["at"], enabled=data["enabled"])

    @admin.display(description=_("next run"))
    def next_run(self, obj):
        if obj is None or not obj.enabled or obj.crontab is None:
            return _("Not scheduled.")
        now = timezone.now()
        schedule = obj.crontab.schedule
        schedule.nowfun = lambda: now
        return date_format(timezone.localtime(now + schedule.remaining_estimate(now)), "DATETIME_FORMAT")

    @admin.display(description=_("last run"))
    def last_run(self, obj):
        job = RescoreJob.objects.filter(kind=RescoreJob.Kind.REQUALIFICATION).order_by("-created_at").first()
        if job is None:
            return _("Never.")
        return format_html_join("", '<a href="{}">{}</a>', [(
            reverse("admin:scoring_rescorejob_progress", args=[job.pk]),
            f"{date_format(timezone.localtime(job.created_at), 'DATETIME_FORMAT')} · {job.get_status_display()}",
        )])
