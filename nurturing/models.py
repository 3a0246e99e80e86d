from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class WorkerHeartbeat(models.Model):
    """The last time a Celery worker ran a beat-scheduled job: proof that the worker
    and beat are alive, shown by /healthz/ and in admin."""

    name = models.CharField(_("name"), max_length=50, unique=True)
    hostname = models.CharField(_("worker"), max_length=255, blank=True)
    beats = models.PositiveBigIntegerField(_("beats"), default=0)
    last_seen = models.DateTimeField(_("last seen"))

    class Meta:
        verbose_name = _("worker heartbeat")
        verbose_name_plural = _("worker heartbeats")

    def __str__(self):
        return self.name


class JobLock(models.Model):
    """A named lock held by one running job at a time (see ``nurturing.locks``)."""

    name = models.CharField(_("name"), max_length=100, unique=True)
    owner = models.CharField(_("owner"), max_length=64, blank=True)
    acquired_at = models.DateTimeField(_("acquired"), null=True, blank=True)
    locked_until = models.DateTimeField(_("locked until"))

    class Meta:
        verbose_name = _("job lock")
        verbose_name_plural = _("job locks")

    def __str__(self):
        return self.name


class Segment(models.Model):
    """A saved filter over the lead base: the query parameters of ``leads.filters.LeadFilterSet``.

    The inbox saves a view as a segment, the dashboard breaks figures down by one, and a
    nurture sequence enrolls the leads that enter one. The same FilterSet applies
    everywhere, so a segment means the same thing in every place. ``owner=me`` in a
    segment means the person looking at it; a job with no person matches no one there.
    """

    name = models.CharField(_("name"), max_length=120)
    slug = models.SlugField(_("slug"), max_length=120, unique=True)
    description = models.TextField(_("description"), blank=True)
    filters = models.JSONField(
        _("filters"), default=dict, blank=True,
        help_text=_('Query parameters of the lead list, e.g. {"status": ["disqualified"], "reason": "no_budget"}.'),
    )
    created_by = models.ForeignKey(
        "auth.User", verbose_name=_("created by"), null=True, blank=True,
        on_delete=models.SET_NULL, related_name="segments",
    )
    shared = models.BooleanField(_("shared"), default=True, help_text=_("Visible to everyone, not only its author."))
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("segment")
        verbose_name_plural = _("segments")
        ordering = ["name"]

    def __str__(self):
        return self.name

    def query_string(self):
        """The filters as a URL query string, for the inbox link of this segment."""
        from django.http import QueryDict

        query = QueryDict(mutable=True)
        for key, value in sorted(self.filters.items()):
            query.setlist(key, [str(item) for item in value] if isinstance(value, list) else [str(value)])
        return query.urlencode()


WEEKDAYS = [
    (0, _("Monday")), (1, _("Tuesday")), (2, _("Wednesday")), (3, _("Thursday")),
    (4, _("Friday")), (5, _("Saturday")), (6, _("Sunday")),
]


def default_send_days():
    return [0, 1, 2, 3, 4]


def default_email_language():
    return settings.LANGUAGE_CODE


class EmailTemplate(models.Model):
    """A nurture email a marketer writes: Django template syntax with ``lead`` (the
    recipient), ``unsubscribe_url``, ``sender_name`` and ``sender_address`` in scope.
    The text body is derived from the HTML when left empty."""

    name = models.CharField(_("name"), max_length=150, unique=True)
    subject = models.CharField(_("subject"), max_length=255)
    html_body = models.TextField(_("HTML body"))
    text_body = models.TextField(
        _("text body"), blank=True, help_text=_("Leave empty to derive it from the HTML body."),
    )
    language = models.CharField(
        _("language"), max_length=10, choices=settings.LANGUAGES, default=default_email_language,
        help_text=_("The language you write this email in: the footer Funil adds (why the person receives it, "
                    "the unsubscribe link) is written in it too."),
    )
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("email template")
        verbose_name_plural = _("email templates")
        ordering = ["name"]

    def __str__(self):
        return self.name


class Sequence(models.Model):
    """A nurture campaign: the leads entering ``segment`` receive its steps in order,
    each one ``delay`` after the previous, inside the send window, until they meet an
    exit condition. Unsubscribed, bounced, complained and erased addresses always exit."""

    name = models.CharField(_("name"), max_length=150)
    slug = models.SlugField(_("slug"), max_length=150, unique=True)
    segment = models.ForeignKey(
        Segment, verbose_name=_("entry segment"), null=True, blank=True, on_delete=models.PROTECT,
        related_name="sequences",
        help_text=_("Leads entering this saved filter are enrolled. Empty: only by hand."),
    )
    active = models.BooleanField(_("active"), default=False)
    allow_reentry = models.BooleanField(
        _("a lead may enter twice"), default=False,
        help_text=_("Enroll a lead again when it enters the segment again after its enrollment ended."),
    )
    send_days = models.JSONField(
        _("send on"), default=default_send_days, blank=True,
        help_text=_("Weekdays, 0 = Monday … 6 = Sunday."),
    )
    send_from_hour = models.PositiveSmallIntegerField(_("from hour"), default=8)
    send_until_hour = models.PositiveSmallIntegerField(
        _("until hour"), default=18, help_text=_("Exclusive: 18 means until 17:59. 24 means until midnight."),
    )
    time_zone = models.CharField(_("time zone"), max_length=64, default="America/Sao_Paulo")
    exit_on_qualified = models.BooleanField(_("exit when qualified"), default=True)
    exit_on_converted = models.BooleanField(_("exit when converted"), default=True)
    exit_on_out_of_focus = models.BooleanField(_("exit when out of focus"), default=True)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("sequence")
        verbose_name_plural = _("sequences")
        ordering = ["name"]

    def __str__(self):
        return self.name

    def clean(self):
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        from django.core.exceptions import ValidationError

        errors = {}
        days = self.send_days
        if not isinstance(days, list) or not days or any(not isinstance(d, int) or not 0 <= d <= 6 for d in days):
            errors["send_days"] = _("List the weekdays as numbers from 0 (Monday) to 6 (Sunday), at least one.")
        if self.send_from_hour > 23:
            errors["send_from_hour"] = _("An hour from 0 to 23.")
        if not 1 <= self.send_until_hour <= 24 or self.send_until_hour <= self.send_from_hour:
            errors["send_until_hour"] = _("An hour after the start hour, at most 24.")
        try:
            ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            errors["time_zone"] = _("Unknown time zone.")
        if errors:
            raise ValidationError(errors)

    def exit_statuses(self):
        from leads.models import LeadStatus

        return [status for status, on in (
            (LeadStatus.QUALIFIED, self.exit_on_qualified),
            (LeadStatus.CONVERTED, self.exit_on_converted),
            (LeadStatus.OUT_OF_FOCUS, self.exit_on_out_of_focus),
        ) if on]

    def window_opens_at(self, at):
        """The first moment at or after ``at`` inside the send window."""
        from .window import next_in_window

        return next_in_window(at, days=self.send_days, from_hour=self.send_from_hour,
                              until_hour=self.send_until_hour, time_zone=self.time_zone)

    def window_open(self, at):
        return self.window_opens_at(at) == at


class SequenceStep(models.Model):
    sequence = models.ForeignKey(Sequence, on_delete=models.CASCADE, related_name="steps", verbose_name=_("sequence"))
    position = models.PositiveSmallIntegerField(_("position"))
    template = models.ForeignKey(
        EmailTemplate, on_delete=models.PROTECT, related_name="steps", verbose_name=_("template"),
    )
    delay_days = models.PositiveIntegerField(_("days after the previous step"), default=0)
    delay_hours = models.PositiveIntegerField(_("hours after the previous step"), default=0)

    class Meta:
        verbose_name = _("step")
        verbose_name_plural = _("steps")
        ordering = ["sequence", "position"]
        constraints = [
            models.UniqueConstraint(fields=["sequence", "position"], name="sequencestep_unique_position"),
        ]

    def __str__(self):
        return f"{self.sequence} · {self.position}"

    @property
    def delay(self):
        from datetime import timedelta

        return timedelta(days=self.delay_days, hours=self.delay_hours)


class Enrollment(models.Model):
    """A lead going through a sequence. At most one active enrollment per lead and sequence."""

    class Status(models.TextChoices):
        ACTIVE = "active", _("Active")
        COMPLETED = "completed", _("Completed")
        EXITED = "exited", _("Exited")
        REMOVED = "removed", _("Removed by hand")

    sequence = models.ForeignKey(
        Sequence, on_delete=models.CASCADE, related_name="enrollments", verbose_name=_("sequence"),
    )
    lead = models.ForeignKey(
        "leads.Lead", on_delete=models.CASCADE, related_name="enrollments", verbose_name=_("lead"),
    )
    status = models.CharField(_("status"), max_length=10, choices=Status.choices, default=Status.ACTIVE)
    exit_reason = models.CharField(_("exit reason"), max_length=30, blank=True)
    enrolled_by = models.ForeignKey(
        "auth.User", verbose_name=_("enrolled by"), null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )
    enrolled_at = models.DateTimeField(_("enrolled"))
    ended_at = models.DateTimeField(_("ended"), null=True, blank=True)

    class Meta:
        verbose_name = _("enrollment")
        verbose_name_plural = _("enrollments")
        ordering = ["-enrolled_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["sequence", "lead"], condition=models.Q(status="active"), name="enrollment_one_active",
            ),
        ]
        indexes = [models.Index(fields=["lead", "status"], name="enrollment_lead_idx")]

    def __str__(self):
        return f"{self.lead_id} · {self.sequence}"


class Delivery(models.Model):
    """One email of one enrollment: the unit the dispatcher claims, sends and records.

    ``claimed``: taken by a worker, nothing sent yet (a stale claim goes back to pending).
    ``sending``: handed to the email backend; if the worker dies now, nobody knows whether
    the message left, so a stale one becomes ``uncertain`` and is never re-sent by itself.
    """

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        CLAIMED = "claimed", _("Claimed")
        SENDING = "sending", _("Sending")
        SENT = "sent", _("Sent")
        FAILED = "failed", _("Failed")
        UNCERTAIN = "uncertain", _("Uncertain (worker died while sending)")
        CANCELLED = "cancelled", _("Cancelled")
        SUPPRESSED = "suppressed", _("Suppressed")

    enrollment = models.ForeignKey(
        Enrollment, on_delete=models.CASCADE, related_name="deliveries", verbose_name=_("enrollment"),
    )
    step = models.ForeignKey(SequenceStep, on_delete=models.PROTECT, related_name="deliveries", verbose_name=_("step"))
    lead = models.ForeignKey(
        "leads.Lead", on_delete=models.CASCADE, related_name="deliveries", verbose_name=_("lead"), db_index=False,
    )
    status = models.CharField(_("status"), max_length=10, choices=Status.choices, default=Status.PENDING)
    due_at = models.DateTimeField(_("due"))
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    claim_token = models.CharField(_("claim"), max_length=32, blank=True)
    claimed_at = models.DateTimeField(_("claimed"), null=True, blank=True)
    sent_at = models.DateTimeField(_("sent"), null=True, blank=True)
    to_email = models.EmailField(_("to"), max_length=254, blank=True)
    message_id = models.CharField(_("Message-ID"), max_length=255, blank=True, db_index=True)
    provider_message_id = models.CharField(_("provider message id"), max_length=255, blank=True, db_index=True)
    last_error = models.TextField(_("last error"), blank=True)
    recorded = models.BooleanField(
        _("recorded"), default=False, help_text=_("Its timeline event and next step are written."),
    )
    opened_at = models.DateTimeField(_("first opened"), null=True, blank=True)
    clicked_at = models.DateTimeField(_("first clicked"), null=True, blank=True)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        verbose_name = _("delivery")
        verbose_name_plural = _("deliveries")
        ordering = ["-due_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["enrollment", "step"], name="delivery_unique_enrollment_step"),
        ]
        indexes = [
            models.Index(fields=["status", "due_at"], name="delivery_due_idx"),
            models.Index(fields=["lead", "status"], name="delivery_lead_idx"),
        ]

    def __str__(self):
        return f"{self.enrollment} · {self.step.position if self.step_id else '?'}"


class Suppression(models.Model):
    """An address nothing may be sent to, kept as a keyed hash (HMAC-SHA256 with
    SECRET_KEY) so that it outlives the erasure of the lead it belonged to."""

    class Reason(models.TextChoices):
        UNSUBSCRIBED = "unsubscribed", _("Unsubscribed")
        BOUNCED = "bounced", _("Bounced")
        COMPLAINED = "complained", _("Complained (spam report)")
        ERASED = "erased", _("Erased (data subject request)")
        MANUAL = "manual", _("Added by hand")

    # What fresh consent lifts (``nurturing.selectors.is_suppressed``): the person asked
    # for no more email, or for erasure, and may change their mind. The other reasons
    # (bounced, complained, manual) stay whatever the consent, and take precedence.
    LIFTED_BY_CONSENT = frozenset({Reason.UNSUBSCRIBED, Reason.ERASED})

    email_hash = models.CharField(_("email hash"), max_length=64, unique=True)
    reason = models.CharField(_("reason"), max_length=20, choices=Reason.choices)
    note = models.CharField(_("note"), max_length=255, blank=True)
    created_at = models.DateTimeField(_("since"), auto_now_add=True)

    class Meta:
        verbose_name = _("suppressed address")
        verbose_name_plural = _("suppressed addresses")
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.get_reason_display()} · {self.email_hash[:12]}"


class TrackingEvent(models.Model):
    """A provider webhook event already applied: a replay finds it and changes nothing."""

    key = models.CharField(_("key"), max_length=64, unique=True)
    esp = models.CharField(_("provider"), max_length=50, blank=True)
    event_type = models.CharField(_("event"), max_length=30)
    delivery = models.ForeignKey(
        Delivery, null=True, blank=True, on_delete=models.SET_NULL, related_name="tracking_events",
        verbose_name=_("delivery"),
    )
    received_at = models.DateTimeField(_("received"), auto_now_add=True)

    class Meta:
        verbose_name = _("provider event")
        verbose_name_plural = _("provider events")
        ordering = ["-received_at"]

    def __str__(self):
        return f"{self.esp} {self.event_type}"
