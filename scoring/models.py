"""Rulesets and rules: what marketers decide a good lead is. Data, never code."""

import datetime

from django.core.exceptions import ValidationError
from django.db import models
from django.utils.translation import gettext_lazy as _
from django_celery_beat.models import PeriodicTask

from . import engine
from .labels import OPERATOR_CHOICES


class Ruleset(models.Model):
    """A versioned set of qualification rules with its thresholds. Exactly one is
    active; activating a draft archives the previous one, which stays readable."""

    class State(models.TextChoices):
        DRAFT = "draft", _("Draft")
        ACTIVE = "active", _("Active")
        ARCHIVED = "archived", _("Archived")

    name = models.CharField(_("name"), max_length=150)
    version = models.PositiveIntegerField(_("version"), default=1, editable=False)
    state = models.CharField(_("state"), max_length=10, choices=State.choices, default=State.DRAFT, editable=False)
    qualify_threshold = models.IntegerField(
        _("qualify at"), default=40, help_text=_("The minimum score of a qualified lead.")
    )
    warm_threshold = models.IntegerField(_("warm from"), default=40, help_text=_("Score from which a lead is warm."))
    hot_threshold = models.IntegerField(_("hot from"), default=70, help_text=_("Score from which a lead is hot."))
    engagement_half_life_days = models.PositiveIntegerField(
        _("engagement half-life (days)"), default=30,
        help_text=_("An engagement event's points halve every this many days."),
    )
    submission_points = models.IntegerField(
        _("points per form submission"), default=0, help_text=_("Engagement points each submission adds.")
    )
    email_open_points = models.IntegerField(_("points per email opened"), default=0)
    email_click_points = models.IntegerField(_("points per email link clicked"), default=0)
    description = models.TextField(_("description"), blank=True)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    activated_at = models.DateTimeField(_("activated"), null=True, blank=True, editable=False)

    class Meta:
        verbose_name = _("ruleset")
        verbose_name_plural = _("rulesets")
        ordering = ["-state", "-activated_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["state"], condition=models.Q(state="active"), name="one_active_ruleset"),
        ]

    def __str__(self):
        return f"{self.name} v{self.version} ({self.get_state_display()})"

    def clean(self):
        if self.hot_threshold < self.warm_threshold:
            raise ValidationError({"hot_threshold": _("Hot must start at or above warm.")})
        if self.engagement_half_life_days < 1:
            raise ValidationError({"engagement_half_life_days": _("At least one day.")})

    def to_engine(self):
        """The pure description the evaluator and the SQL compiler work from."""
        return engine.Ruleset(
            qualify=self.qualify_threshold, warm=self.warm_threshold, hot=self.hot_threshold,
            half_life_days=self.engagement_half_life_days,
            engagement_points={
                engine.SUBMISSION: self.submission_points,
                engine.EMAIL_OPEN: self.email_open_points,
                engine.EMAIL_CLICK: self.email_click_points,
            },
            rules=tuple(rule.to_engine() for rule in self.rules.all() if rule.active),
        )


class Rule(models.Model):
    """One criterion: a field, an operator, a value, and its effect."""

    class Effect(models.TextChoices):
        POINTS = "points", _("Add or remove points")
        OUT_OF_FOCUS = "out_of_focus", _("Knock-out: out of focus")
        DISQUALIFIED = "disqualified", _("Knock-out: disqualified")

    ruleset = models.ForeignKey(Ruleset, on_delete=models.CASCADE, related_name="rules", verbose_name=_("ruleset"))
    order = models.PositiveIntegerField(_("order"), default=0)
    name = models.CharField(_("name"), max_length=150)
    field = models.CharField(
        _("field"), max_length=100,
        help_text=_("A lead field (state, interest, budget…), attributes.<key>, or submissions / email_opens / "
                    "email_clicks (counted over the window)."),
    )
    operator = models.CharField(_("operator"), max_length=20, choices=OPERATOR_CHOICES)
    value = models.JSONField(
        _("value"), null=True, blank=True, help_text=_('A text, a number, or a list: ["SP", "RJ"].')
    )
    window_days = models.PositiveIntegerField(
        _("window (days)"), default=30, help_text=_("For engagement counts: how many days back to count.")
    )
    effect = models.CharField(_("effect"), max_length=20, choices=Effect.choices, default=Effect.POINTS)
    points = models.IntegerField(_("points"), default=0)
    reason = models.ForeignKey(
        "leads.Reason", on_delete=models.PROTECT, null=True, blank=True, related_name="+", verbose_name=_("reason"),
        help_text=_("The reason a knock-out gives."),
    )
    active = models.BooleanField(_("active"), default=True)

    class Meta:
        verbose_name = _("rule")
        verbose_name_plural = _("rules")
        ordering = ["ruleset", "order", "id"]

    def __str__(self):
        return self.name

    def clean(self):
        try:
            engine.validate_rule(self.field, self.operator, self.value)
        except engine.RuleError as exc:
            raise ValidationError({exc.field: rule_error_text(exc)}) from exc
        if self.effect != self.Effect.POINTS and self.reason is None:
            raise ValidationError({"reason": _("A knock-out needs the reason it gives.")})
        if self.effect != self.Effect.POINTS and self.reason and not self.reason.applies_to(self.effect):
            raise ValidationError({"reason": _("This reason does not apply to this effect.")})

    def to_engine(self):
        return engine.Rule(
            id=self.pk, name=self.name, field=self.field, operator=self.operator, value=self.value,
            effect=self.effect, points=self.points, reason=self.reason.slug if self.reason_id else "",
            window_days=self.window_days,
        )


RULE_ERROR_MESSAGES = {
    "unknown_field": _("Unknown field: '%(name)s'. Pick one from the list, or attributes.<key>."),
    "unknown_operator": _("Unknown operator: '%(operator)s'."),
    "misfit": _("The operator '%(operator)s' does not fit the field '%(field_name)s'."),
    "email_only": _("email_domain_in applies to the email field."),
    "list": _("Give a non-empty list of values."),
    "between": _("Give two numbers: [from, to]."),
    "one": _("Give one value."),
    "scalar": _("Values must be texts or numbers, not empty."),
    "number": _("%(value)s is not a number."),
    "portable": _("Use plain patterns: letters, . * + ? | ^ $ [ ] ( ), {m,n} repeats up to 255, and \\. \\{ "
                  "escapes."),
    "regex": _("The regular expression does not compile: %(error)s."),
}


def rule_error_text(exc):
    """An ``engine.RuleError`` in the active language (the engine itself speaks English)."""
    template = RULE_ERROR_MESSAGES.get(exc.code)
    return template % exc.params if template is not None else exc.message


class RescoreJob(models.Model):
    """One run of the set-based rescoring over all leads (or the requalification
    candidates), chunk by chunk. Progress lives here, so a killed worker resumes
    after the last committed chunk and nothing runs twice."""

    class Kind(models.TextChoices):
        ACTIVATION = "activation", _("Ruleset activated")
        REQUALIFICATION = "requalification", _("Requalification")
        MANUAL = "manual", _("Manual rescore")

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        RUNNING = "running", _("Running")
        DONE = "done", _("Done")
        FAILED = "failed", _("Failed")

    ruleset = models.ForeignKey(Ruleset, on_delete=models.CASCADE, related_name="jobs", verbose_name=_("ruleset"))
    kind = models.CharField(_("kind"), max_length=20, choices=Kind.choices, default=Kind.MANUAL)
    status = models.CharField(_("status"), max_length=10, choices=Status.choices, default=Status.PENDING)
    first_id = models.BigIntegerField(_("first lead id"), default=0)
    last_id = models.BigIntegerField(_("last lead id"), default=0)
    done_through_id = models.BigIntegerField(_("done through lead id"), default=0)
    leads_seen = models.PositiveBigIntegerField(_("leads evaluated"), default=0)
    leads_changed = models.PositiveBigIntegerField(_("leads changed"), default=0)
    status_changes = models.PositiveBigIntegerField(_("status changes"), default=0)
    transitions = models.JSONField(_("moves"), default=dict, blank=True)
    error = models.TextField(_("error"), blank=True)
    worker = models.CharField(_("worker"), max_length=255, blank=True)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    started_at = models.DateTimeField(_("started"), null=True, blank=True)
    heartbeat_at = models.DateTimeField(_("last progress"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True)

    class Meta:
        verbose_name = _("rescoring job")
        verbose_name_plural = _("rescoring jobs")
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"{self.get_kind_display()} · {self.ruleset} · {self.get_status_display()}"

    @property
    def progress(self):
        """0–100: the share of the id range done."""
        span = self.last_id - self.first_id
        if self.status == self.Status.DONE:
            return 100
        if span <= 0:
            return 0
        return max(0, min(100, round(100 * (self.done_through_id - self.first_id) / span)))


class RequalificationSchedule(PeriodicTask):
    """When the daily requalification runs: the beat entry of ``scoring.tasks.requalify``
    (django-celery-beat's row), as marketers edit it in admin (days and a time, not a
    crontab), without access to the other periodic jobs (``services.requalify_schedule``)."""

    class Meta:
        proxy = True
        verbose_name = _("requalification schedule")
        verbose_name_plural = _("requalification schedule")

    # Cron's weekday numbers (0 is Sunday) from Monday, as a Brazilian calendar lists them.
    WEEKDAYS = [(1, _("Monday")), (2, _("Tuesday")), (3, _("Wednesday")), (4, _("Thursday")), (5, _("Friday")),
                (6, _("Saturday")), (0, _("Sunday"))]

    def days_and_time(self):
        """``(days, time)``: cron weekday numbers and the first time of day it runs (a
        schedule edited as a raw crontab may run at several); every day at 06:00 when it
        has no crontab."""
        if self.crontab is None:
            return set(range(7)), datetime.time(6, 0)
        schedule = self.crontab.schedule
        return set(schedule.day_of_week), datetime.time(min(schedule.hour), min(schedule.minute))

    def __str__(self):
        """The schedule in words: "Every day at 06:00", "Monday, Friday at 07:30"."""
        if not self.enabled or self.crontab is None:
            return str(_("Not scheduled"))
        days, at = self.days_and_time()
        at = at.strftime("%H:%M")
        if days == set(range(7)):
            return str(_("Every day at %(time)s") % {"time": at})
        named = ", ".join(str(name) for number, name in self.WEEKDAYS if number in days)
        return str(_("%(days)s at %(time)s") % {"days": named, "time": at})
