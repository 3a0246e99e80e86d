"""The shared data model: leads, their timeline, and the catalogue marketers edit."""

import uuid

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils.translation import gettext_lazy as _


class LeadStatus(models.TextChoices):
    NEW = "new", _("New")
    QUALIFIED = "qualified", _("Qualified")
    DISQUALIFIED = "disqualified", _("Disqualified")
    OUT_OF_FOCUS = "out_of_focus", _("Out of focus")
    CONVERTED = "converted", _("Converted")


class Temperature(models.TextChoices):
    HOT = "hot", _("Hot")
    WARM = "warm", _("Warm")
    COLD = "cold", _("Cold")


class StatusSetBy(models.TextChoices):
    RULES = "rules", _("Rules")
    PERSON = "person", _("Person")


class Source(models.Model):
    """A capture channel: a contact form, a newsletter, a content download, a social ad..."""

    class Channel(models.TextChoices):
        CONTACT_FORM = "contact_form", _("Contact form")
        NEWSLETTER = "newsletter", _("Newsletter sign-up")
        CONTENT_DOWNLOAD = "content_download", _("Content download")
        SOCIAL = "social", _("Social network")
        IMPORT = "import", _("Import")
        API = "api", _("Integration (API)")
        OTHER = "other", _("Other")

    slug = models.SlugField(_("slug"), unique=True)
    name = models.CharField(_("name"), max_length=100)
    channel = models.CharField(_("channel"), max_length=20, choices=Channel.choices, default=Channel.OTHER)
    active = models.BooleanField(_("active"), default=True)

    class Meta:
        verbose_name = _("source")
        verbose_name_plural = _("sources")
        ordering = ["name"]

    def __str__(self):
        return self.name


class Product(models.Model):
    """Something the company sells; rules and interest matching refer to it."""

    slug = models.SlugField(_("slug"), unique=True)
    name = models.CharField(_("name"), max_length=150)
    description = models.TextField(_("description"), blank=True)
    keywords = models.CharField(
        _("keywords"), max_length=500, blank=True,
        help_text=_("Comma-separated words a lead may use when asking for this product."),
    )
    active = models.BooleanField(_("active"), default=True)

    class Meta:
        verbose_name = _("product")
        verbose_name_plural = _("products")
        ordering = ["name"]

    def __str__(self):
        return self.name

    def keyword_list(self):
        return [word.strip() for word in self.keywords.split(",") if word.strip()]


class ServiceArea(models.Model):
    """A place the company serves: a whole state (UF), or one city in it."""

    name = models.CharField(_("name"), max_length=150)
    country = models.CharField(_("country"), max_length=2, default="BR")
    state = models.CharField(_("state (UF)"), max_length=2, blank=True)
    city = models.CharField(_("city"), max_length=150, blank=True, help_text=_("Empty means the whole state."))
    active = models.BooleanField(_("active"), default=True)

    class Meta:
        verbose_name = _("service area")
        verbose_name_plural = _("service areas")
        ordering = ["country", "state", "city"]
        constraints = [
            models.UniqueConstraint(fields=["country", "state", "city"], name="servicearea_unique_place"),
        ]

    def __str__(self):
        return self.name


class Reason(models.Model):
    """Why a lead was disqualified or put out of focus, from a list the marketer edits."""

    class Kind(models.TextChoices):
        DISQUALIFIED = "disqualified", _("Disqualified")
        OUT_OF_FOCUS = "out_of_focus", _("Out of focus")
        BOTH = "both", _("Both")

    slug = models.SlugField(_("slug"), unique=True)
    label = models.CharField(_("label"), max_length=150)
    kind = models.CharField(_("applies to"), max_length=20, choices=Kind.choices, default=Kind.BOTH)
    active = models.BooleanField(_("active"), default=True)

    class Meta:
        verbose_name = _("reason")
        verbose_name_plural = _("reasons")
        ordering = ["label"]

    def __str__(self):
        return self.label

    def applies_to(self, status):
        return self.kind == self.Kind.BOTH or self.kind == status


class Form(models.Model):
    """A capture form on a landing page; it posts leads to the public endpoint
    ``POST /api/v1/forms/<slug>/submissions/``. Marketers edit what it accepts."""

    # Fields every form understands; the form chooses which it accepts and requires.
    STANDARD_FIELDS = (
        "email", "name", "first_name", "last_name", "phone", "company", "job_title", "company_size",
        "country", "state", "city", "interest", "budget", "message", "consent",
        "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content",
    )
    DEFAULT_FIELDS = ("email", "name", "phone", "company", "job_title", "state", "city", "interest", "message")

    slug = models.SlugField(_("slug"), unique=True)
    name = models.CharField(_("name"), max_length=150)
    source = models.ForeignKey(Source, on_delete=models.PROTECT, related_name="forms", verbose_name=_("source"))
    default_interest = models.CharField(_("default interest"), max_length=255, blank=True)
    fields = models.JSONField(
        _("accepted fields"), default=list, blank=True,
        help_text=_("Field names this form accepts. Names that are not standard fields are kept as custom "
                    "fields of the lead. Empty: the usual contact fields."),
    )
    required_fields = models.JSONField(
        _("required fields"), default=list, blank=True,
        help_text=_("Field names that must be filled. A lead always needs an email or a phone."),
    )
    allowed_origins = models.TextField(
        _("allowed origins"), blank=True,
        help_text=_("One origin per line, e.g. https://www.example.com. Empty: any site may post."),
    )
    success_url = models.URLField(
        _("success redirect URL"), blank=True,
        help_text=_("Where a plain HTML form post is sent after success. Empty: Funil's thank-you page."),
    )
    thank_you_message = models.CharField(
        _("thank-you message"), max_length=255, blank=True, default="",
        help_text=_("Shown after a successful submission. Empty: a standard message."),
    )
    consent_text = models.TextField(_("consent text"), blank=True)
    consent_version = models.CharField(_("consent text version"), max_length=30, blank=True)
    consent_required = models.BooleanField(_("consent required"), default=False)
    honeypot_field = models.CharField(
        _("honeypot field"), max_length=50, default="website",
        help_text=_("A hidden field people never fill; submissions that fill it are kept as spam."),
    )
    active = models.BooleanField(_("active"), default=True)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        verbose_name = _("form")
        verbose_name_plural = _("forms")
        ordering = ["name"]

    def __str__(self):
        return self.name

    def get_accepted_fields(self):
        return list(self.fields) or list(self.DEFAULT_FIELDS)

    def get_allowed_origins(self):
        return [line.strip().rstrip("/") for line in self.allowed_origins.splitlines() if line.strip()]

    def allows_origin(self, origin):
        allowed = self.get_allowed_origins()
        return not allowed or (origin or "").rstrip("/") in allowed


class Fit(models.TextChoices):
    """A sales rep's rating of a lead's quality."""

    GOOD = "good", _("Good fit")
    BAD = "bad", _("Bad fit")


class Lead(models.Model):
    """A person who showed interest. Every write goes through ``leads.services``."""

    # Identity and contact. Email is stored normalised (lower case, IDNA domain);
    # NULL, never "", when unknown, so the unique constraint ignores it.
    email = models.EmailField(_("email"), max_length=254, null=True, blank=True)
    first_name = models.CharField(_("first name"), max_length=100, blank=True)
    last_name = models.CharField(_("last name"), max_length=150, blank=True)
    phone = models.CharField(_("phone"), max_length=20, blank=True, help_text=_("E.164, e.g. +5511987654321"))

    # Company and profile.
    company = models.CharField(_("company"), max_length=200, blank=True)
    job_title = models.CharField(_("job title"), max_length=150, blank=True)
    company_size = models.PositiveIntegerField(_("company size"), null=True, blank=True, help_text=_("Employees."))
    country = models.CharField(_("country"), max_length=2, blank=True, default="BR")
    state = models.CharField(_("state (UF)"), max_length=2, blank=True)
    city = models.CharField(_("city"), max_length=150, blank=True)

    # What the lead asked for.
    interest = models.CharField(_("interest"), max_length=255, blank=True)
    budget = models.DecimalField(_("budget"), max_digits=14, decimal_places=2, null=True, blank=True)
    budget_currency = models.CharField(_("budget currency"), max_length=3, default="BRL")
    message = models.TextField(_("message"), blank=True)

    # Where it came from.
    source = models.ForeignKey(
        Source, on_delete=models.PROTECT, null=True, blank=True, related_name="leads", verbose_name=_("source")
    )
    form = models.ForeignKey(
        Form, on_delete=models.SET_NULL, null=True, blank=True, related_name="leads", verbose_name=_("form")
    )
    utm_source = models.CharField(_("UTM source"), max_length=150, blank=True)
    utm_medium = models.CharField(_("UTM medium"), max_length=150, blank=True)
    utm_campaign = models.CharField(_("UTM campaign"), max_length=150, blank=True)
    utm_term = models.CharField(_("UTM term"), max_length=150, blank=True)
    utm_content = models.CharField(_("UTM content"), max_length=150, blank=True)

    # Qualification.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
        related_name="owned_leads", verbose_name=_("owner"), db_index=False,  # (owner, status) covers it
    )
    status = models.CharField(_("status"), max_length=20, choices=LeadStatus.choices, default=LeadStatus.NEW)
    status_set_by = models.CharField(
        _("status set by"), max_length=10, choices=StatusSetBy.choices, default=StatusSetBy.RULES
    )
    status_changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
        related_name="+", verbose_name=_("status changed by"), db_index=False,
    )
    # No index of its own: every rescoring write would update it, and no query needs it
    # (reports filter by period or status first; the reason filter scans faster without it).
    reason = models.ForeignKey(
        Reason, on_delete=models.PROTECT, null=True, blank=True, related_name="leads", verbose_name=_("reason"),
        db_index=False,
    )
    reason_note = models.TextField(_("reason note"), blank=True)
    score = models.IntegerField(_("score"), default=0)
    temperature = models.CharField(
        _("temperature"), max_length=4, choices=Temperature.choices, default=Temperature.COLD
    )
    deal_value = models.DecimalField(_("deal value"), max_digits=14, decimal_places=2, null=True, blank=True)
    # Sales' feedback on the lead's quality, which marketing reads next to the rules that let it through.
    # db_default too, so bulk loaders (COPY) that leave the columns out get the same value.
    fit = models.CharField(
        _("quality rating"), max_length=4, choices=Fit.choices, blank=True, default="", db_default=""
    )
    fit_note = models.TextField(_("quality note"), blank=True, default="", db_default="")
    fit_rated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
        related_name="+", verbose_name=_("rated by"), db_index=False,
    )
    fit_rated_at = models.DateTimeField(_("rated at"), null=True, blank=True)
    attributes = models.JSONField(_("custom fields"), default=dict, blank=True)

    # Timestamps.
    created_at = models.DateTimeField(_("created"), auto_now_add=True)  # lead_report_idx covers it
    updated_at = models.DateTimeField(_("updated"), auto_now=True)
    qualified_at = models.DateTimeField(_("qualified at"), null=True, blank=True)
    disqualified_at = models.DateTimeField(_("disqualified at"), null=True, blank=True)
    out_of_focus_at = models.DateTimeField(_("out of focus at"), null=True, blank=True)
    converted_at = models.DateTimeField(_("converted at"), null=True, blank=True)
    last_activity_at = models.DateTimeField(_("last activity"), null=True, blank=True)
    requalify_at = models.DateTimeField(_("next requalification"), null=True, blank=True)
    # A rep's first action on the lead after it was qualified (time to first touch).
    first_touched_at = models.DateTimeField(_("first touched"), null=True, blank=True)

    class Meta:
        verbose_name = _("lead")
        verbose_name_plural = _("leads")
        ordering = ["-score", "-id"]
        permissions = [("work_any_lead", _("Can act on any lead, not only own and unassigned ones"))]
        constraints = [
            models.UniqueConstraint(
                fields=["email"], condition=models.Q(email__isnull=False), name="lead_unique_email"
            ),
            # Leads without email are deduplicated by phone.
            models.UniqueConstraint(
                fields=["phone"], condition=models.Q(email__isnull=True) & ~models.Q(phone=""),
                name="lead_unique_phone_without_email",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "-score", "-id"], name="lead_status_score_idx"),
            models.Index(fields=["owner", "status"], name="lead_owner_status_idx"),
            # Every page's header counts the unassigned hot leads (selectors.header_counts).
            # Usually few, among many qualified leads that reps own: without this index the
            # planner walks every qualified lead looking for them (~0.5 s at a million).
            models.Index(fields=["temperature"], name="lead_unassigned_idx",
                         condition=models.Q(status="qualified", owner__isnull=True)),
            models.Index(fields=["phone"], name="lead_phone_idx"),
            # The leads captured in a period with every column the dashboard reads
            # (leads.reports), so its passes over a million leads are index-only scans.
            models.Index(fields=["created_at"], name="lead_report_idx", include=[
                "id", "status", "qualified_at", "first_touched_at", "deal_value", "fit", "reason", "source",
                "form", "owner", "utm_campaign", "interest",
            ]),
        ]

    def __str__(self):
        return self.full_name or self.email or self.phone or f"#{self.pk}"

    def get_absolute_url(self):
        return reverse("leads:detail", args=[self.pk])

    @property
    def full_name(self):
        return " ".join(part for part in (self.first_name, self.last_name) if part)

    @property
    def is_open(self):
        """Still to be worked by sales: qualified and not yet converted."""
        return self.status == LeadStatus.QUALIFIED


class LeadEvent(models.Model):
    """One entry of a lead's append-only timeline."""

    class Kind(models.TextChoices):
        CAPTURED = "captured", _("Captured")
        RESUBMITTED = "resubmitted", _("Submitted again")
        UPDATED = "updated", _("Details updated")
        STATUS_CHANGED = "status_changed", _("Status changed")
        SCORED = "scored", _("Scored")
        ASSIGNED = "assigned", _("Assigned")
        NOTE = "note", _("Note")
        EMAIL_SENT = "email_sent", _("Email sent")
        EMAIL_OPENED = "email_opened", _("Email opened")
        EMAIL_CLICKED = "email_clicked", _("Email clicked")
        REQUALIFIED = "requalified", _("Requalified")
        CONSENT = "consent", _("Consent")
        RATED = "rated", _("Quality rated")
        NURTURE_ENROLLED = "nurture_enrolled", _("Entered a nurture sequence")
        NURTURE_LEFT = "nurture_left", _("Left a nurture sequence")

    lead = models.ForeignKey(
        Lead, on_delete=models.CASCADE, related_name="events", verbose_name=_("lead"),
        db_index=False,  # (lead, -created_at) covers it
    )
    kind = models.CharField(_("kind"), max_length=20, choices=Kind.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
        related_name="+", verbose_name=_("by"), db_index=False,
    )
    from_status = models.CharField(_("from"), max_length=20, choices=LeadStatus.choices, blank=True)
    to_status = models.CharField(_("to"), max_length=20, choices=LeadStatus.choices, blank=True)
    reason = models.ForeignKey(
        Reason, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", verbose_name=_("reason"),
        db_index=False,
    )
    note = models.TextField(_("note"), blank=True)
    data = models.JSONField(_("data"), default=dict, blank=True)
    created_at = models.DateTimeField(_("when"), auto_now_add=True)

    class Meta:
        verbose_name = _("timeline event")
        verbose_name_plural = _("timeline events")
        ordering = ["-created_at", "-id"]
        indexes = [
            # The timeline of a lead, newest first; with the kind, rescoring counts a
            # lead's engagement from the index alone, without visiting the table.
            models.Index(fields=["lead", "-created_at", "kind"], name="leadevent_timeline_idx"),
            # The dashboard's requalification figure: the comebacks of a period, index-only.
            models.Index(fields=["created_at"], include=["lead"], name="leadevent_requalified_idx",
                         condition=models.Q(kind="requalified", to_status="qualified")),
        ]

    def __str__(self):
        return f"{self.get_kind_display()} · {self.lead_id}"

    # Why a lead left a nurture sequence (``nurture_left`` events' ``why``).
    NURTURE_WHY = {
        "completed": _("completed"),
        "qualified": _("the lead qualified"),
        "converted": _("the lead converted"),
        "out_of_focus": _("the lead is out of focus"),
        "unsubscribed": _("unsubscribed"),
        "bounced": _("suppressed: the email bounced"),
        "complained": _("suppressed: marked as spam"),
        "erased": _("suppressed: personal data erased"),
        "manual": _("suppressed by hand"),
        "suppressed": _("the address is suppressed"),
        "no_email": _("no email address"),
        "no_consent": _("no consent"),
        "removed": _("removed by hand"),
    }

    @property
    def nurture_why_label(self):
        why = (self.data or {}).get("why", "")
        return self.NURTURE_WHY.get(why, why)

    @property
    def actor_label(self):
        if self.actor_id:
            return self.actor.get_full_name() or self.actor.get_username()
        return str(_("Rules")) if self.kind in (self.Kind.SCORED, self.Kind.REQUALIFIED) else str(_("System"))


class Submission(models.Model):
    """A form post exactly as it arrived, stored before anything else happens, so that
    nothing is lost: if processing fails, ``manage.py replay_submissions`` retries it."""

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        PROCESSED = "processed", _("Processed")
        INVALID = "invalid", _("Invalid")
        SPAM = "spam", _("Spam")
        FAILED = "failed", _("Failed")

    public_id = models.UUIDField(_("public id"), default=uuid.uuid4, unique=True, editable=False)
    form = models.ForeignKey(Form, on_delete=models.PROTECT, related_name="submissions", verbose_name=_("form"))
    payload = models.JSONField(_("payload"), default=dict)
    content_type = models.CharField(_("content type"), max_length=100, blank=True)
    ip = models.GenericIPAddressField(_("IP address"), null=True, blank=True)
    user_agent = models.CharField(_("user agent"), max_length=500, blank=True)
    referrer = models.CharField(_("referrer"), max_length=1000, blank=True)
    origin = models.CharField(_("origin"), max_length=255, blank=True)
    idempotency_key = models.CharField(_("idempotency key"), max_length=255, null=True, blank=True)
    status = models.CharField(_("status"), max_length=10, choices=Status.choices, default=Status.PENDING)
    errors = models.JSONField(_("errors"), default=dict, blank=True)
    dropped_keys = models.JSONField(_("dropped keys"), default=list, blank=True)
    lead = models.ForeignKey(
        Lead, on_delete=models.SET_NULL, null=True, blank=True, related_name="submissions", verbose_name=_("lead")
    )
    created_lead = models.BooleanField(_("created the lead"), default=False)
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    received_at = models.DateTimeField(_("received"), auto_now_add=True, db_index=True)
    processed_at = models.DateTimeField(_("processed"), null=True, blank=True)

    class Meta:
        verbose_name = _("submission")
        verbose_name_plural = _("submissions")
        ordering = ["-received_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["form", "idempotency_key"], condition=models.Q(idempotency_key__isnull=False),
                name="submission_unique_idempotency_key",
            ),
        ]
        indexes = [models.Index(fields=["status", "received_at"], name="submission_status_idx")]

    def __str__(self):
        return f"{self.form} · {self.received_at:%Y-%m-%d %H:%M}"


class Consent(models.Model):
    """The consent ledger: what a lead agreed to (text and version), when and where,
    and every withdrawal."""

    class Action(models.TextChoices):
        GRANTED = "granted", _("Granted")
        WITHDRAWN = "withdrawn", _("Withdrawn")

    lead = models.ForeignKey(Lead, on_delete=models.CASCADE, related_name="consents", verbose_name=_("lead"))
    action = models.CharField(_("action"), max_length=10, choices=Action.choices, default=Action.GRANTED)
    form = models.ForeignKey(
        Form, on_delete=models.SET_NULL, null=True, blank=True, verbose_name=_("form"), db_index=False
    )
    submission = models.ForeignKey(
        Submission, on_delete=models.SET_NULL, null=True, blank=True, verbose_name=_("submission"), db_index=False
    )
    text = models.TextField(_("text"), blank=True)
    version = models.CharField(_("version"), max_length=30, blank=True)
    ip = models.GenericIPAddressField(_("IP address"), null=True, blank=True)
    note = models.CharField(_("note"), max_length=255, blank=True)
    created_at = models.DateTimeField(_("when"), auto_now_add=True)

    class Meta:
        verbose_name = _("consent")
        verbose_name_plural = _("consents")
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"{self.get_action_display()} · {self.version}"


class ImportJob(models.Model):
    """A CSV import started from admin: the uploaded file and its column mapping, then
    the progress and report of the worker that imports it (``leads.importer``).

    Each batch of rows commits its leads together with ``last_line`` and the counts,
    so a job taken over after its worker died resumes after the last committed row.
    """

    class Status(models.TextChoices):
        MAPPING = "mapping", _("Waiting for the column mapping")
        PENDING = "pending", _("Pending")
        RUNNING = "running", _("Running")
        DONE = "done", _("Done")
        FAILED = "failed", _("Failed")

    form = models.ForeignKey(Form, on_delete=models.PROTECT, related_name="import_jobs", verbose_name=_("form"))
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
        verbose_name=_("created by"), db_index=False,
    )
    file_name = models.CharField(_("file name"), max_length=255)
    path = models.CharField(_("stored file"), max_length=1000)
    encoding = models.CharField(_("encoding"), max_length=20, blank=True)
    delimiter = models.CharField(_("delimiter"), max_length=1, blank=True)
    header = models.JSONField(_("columns"), default=list, blank=True)
    columns = models.JSONField(
        _("column mapping"), default=list, blank=True,
        help_text=_("The lead field each column goes to, in the file's order; empty: the column is ignored."),
    )
    empty_values = models.JSONField(_("values read as empty"), default=list, blank=True)
    status = models.CharField(_("status"), max_length=10, choices=Status.choices, default=Status.MAPPING)
    bytes_total = models.PositiveBigIntegerField(_("file size"), default=0)
    bytes_done = models.PositiveBigIntegerField(_("bytes read"), default=0)
    rows_done = models.PositiveBigIntegerField(_("rows read"), default=0)
    last_line = models.PositiveBigIntegerField(_("last line committed"), default=0)
    created_count = models.PositiveBigIntegerField(_("leads created"), default=0)
    updated_count = models.PositiveBigIntegerField(_("leads updated"), default=0)
    rejected_count = models.PositiveBigIntegerField(_("rows rejected"), default=0)
    skipped_count = models.PositiveBigIntegerField(_("blank rows"), default=0)
    rejected_path = models.CharField(_("rejected rows file"), max_length=1000, blank=True)
    rejected_sample = models.JSONField(_("first rejected rows"), default=list, blank=True)
    error = models.TextField(_("error"), blank=True)
    worker = models.CharField(_("worker"), max_length=255, blank=True)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    started_at = models.DateTimeField(_("started"), null=True, blank=True)
    heartbeat_at = models.DateTimeField(_("last progress"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True)

    class Meta:
        verbose_name = _("lead import")
        verbose_name_plural = _("lead imports")
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"{self.file_name} · {self.get_status_display()}"

    @property
    def progress(self):
        """0–100: the share of the file read."""
        if self.status == self.Status.DONE:
            return 100
        if not self.bytes_total:
            return 0
        return max(0, min(100, round(100 * self.bytes_done / self.bytes_total)))


class AssignmentRule(models.Model):
    """Who gets a lead when it becomes qualified, edited in admin by the sales manager.

    Rules are tried in order; the first one that matches the lead (its state and
    interest) and has a rep under the cap gives the lead to the next rep in its
    rotation (round robin among its active reps; no reps chosen: every active sales
    rep). A lead no rule can place stays unassigned, for reps to claim.
    """

    name = models.CharField(_("name"), max_length=120)
    order = models.PositiveIntegerField(_("order"), default=0, help_text=_("Rules are tried lowest first."))
    active = models.BooleanField(_("active"), default=True)
    states = models.CharField(
        _("states (UF)"), max_length=200, blank=True,
        help_text=_("Comma-separated UFs this rule covers (a territory), e.g. “SP, RJ”. Empty: any state."),
    )
    interest_keywords = models.CharField(
        _("interest keywords"), max_length=500, blank=True,
        help_text=_("Comma-separated words; the lead's interest must contain one (accents and case ignored). "
                    "Empty: any interest."),
    )
    reps = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="assignment_rules", verbose_name=_("reps"),
        help_text=_("The reps in the rotation. Empty: every active sales rep."),
    )
    max_open_leads = models.PositiveIntegerField(
        _("cap of open leads per rep"), null=True, blank=True,
        help_text=_("A rep with this many qualified leads gets no more from this rule. Empty: no cap."),
    )
    last_assigned = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
        verbose_name=_("last assigned to"), editable=False,
    )

    class Meta:
        verbose_name = _("assignment rule")
        verbose_name_plural = _("assignment rules")
        ordering = ["order", "id"]

    def __str__(self):
        return self.name

    def state_list(self):
        return [code.strip().upper() for code in self.states.split(",") if code.strip()]

    def keyword_list(self):
        from .normalize import fold

        return [fold(word) for word in self.interest_keywords.split(",") if word.strip()]

    def matches(self, lead):
        """Does this rule cover the lead? (Pure: tested on unsaved objects.)"""
        from .normalize import fold

        states = self.state_list()
        if states and (lead.state or "").upper() not in states:
            return False
        keywords = self.keyword_list()
        return not keywords or any(word in fold(lead.interest or "") for word in keywords)


# --- Insights: spend, audit, suppression, outbound webhooks --------------------------------------


class SpendRecord(models.Model):
    """Money marketing spent in one month on a source, a UTM campaign, or a campaign of a
    source. Cost per lead and ROI on the dashboard divide by these. Each record is money
    spent once: the total spend of a period is the sum of its records."""

    month = models.DateField(_("month"), help_text=_("Any day of the month; stored as its first day."))
    source = models.ForeignKey(
        Source, on_delete=models.PROTECT, null=True, blank=True, related_name="spend", verbose_name=_("source")
    )
    utm_campaign = models.CharField(_("UTM campaign"), max_length=150, blank=True)
    amount = models.DecimalField(_("amount"), max_digits=14, decimal_places=2)
    currency = models.CharField(_("currency"), max_length=3, default="BRL")
    note = models.CharField(_("note"), max_length=255, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
        verbose_name=_("entered by"), db_index=False,
    )
    created_at = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        verbose_name = _("spend record")
        verbose_name_plural = _("spend records")
        ordering = ["-month", "source__name", "utm_campaign"]
        constraints = [
            models.UniqueConstraint(fields=["month", "source", "utm_campaign"], name="spend_unique_month_target"),
            models.CheckConstraint(condition=models.Q(amount__gte=0), name="spend_amount_not_negative"),
        ]

    def __str__(self):
        target = " · ".join(part for part in (str(self.source or ""), self.utm_campaign) if part)
        return f"{self.month:%Y-%m} · {target or _('all')} · {self.amount}"

    def clean(self):
        from django.core.exceptions import ValidationError

        if self.source_id is None and not self.utm_campaign:
            raise ValidationError(_("Choose a source, a UTM campaign, or both."))
        if self.month:
            self.month = self.month.replace(day=1)


class AuditLog(models.Model):
    """Who exported, erased or bulk-changed what, and when. Never holds the person's
    contact data: the lead is referred to by id only."""

    class Action(models.TextChoices):
        EXPORT = "export", _("Export of a person's data")
        ERASE = "erase", _("Erasure")
        PURGE = "purge", _("Retention purge")
        CONSENT_WITHDRAWN = "consent_withdrawn", _("Consent withdrawn")
        BULK_CHANGE = "bulk_change", _("Bulk change")

    action = models.CharField(_("action"), max_length=20, choices=Action.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
        verbose_name=_("by"), db_index=False,
    )
    via = models.CharField(_("via"), max_length=20, blank=True, help_text=_("page, api, command, admin…"))
    lead_ref = models.BigIntegerField(_("lead id"), null=True, blank=True, db_index=True)
    count = models.PositiveIntegerField(_("leads"), default=1)
    detail = models.JSONField(_("detail"), default=dict, blank=True)
    created_at = models.DateTimeField(_("when"), auto_now_add=True, db_index=True)

    class Meta:
        verbose_name = _("audit entry")
        verbose_name_plural = _("audit log")
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"{self.get_action_display()} · {self.created_at:%Y-%m-%d %H:%M}"


class WebhookEndpoint(models.Model):
    """A URL another system gives us to be told about lead events, signed with ``secret``."""

    EVENTS = ("lead.created", "lead.qualified", "lead.disqualified", "lead.out_of_focus", "lead.converted")

    name = models.CharField(_("name"), max_length=150)
    url = models.URLField(_("URL"), max_length=500, help_text=_("Must be https."))
    events = models.JSONField(
        _("events"), default=list, help_text=_("Any of: lead.created, lead.qualified, lead.disqualified, "
                                               "lead.out_of_focus, lead.converted."),
    )
    secret = models.CharField(_("signing secret"), max_length=100)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
        verbose_name=_("owner"), help_text=_("Told by email when the endpoint is paused."),
    )
    active = models.BooleanField(_("active"), default=True)
    paused_at = models.DateTimeField(_("paused at"), null=True, blank=True)
    consecutive_failures = models.PositiveIntegerField(_("failures in a row"), default=0)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        verbose_name = _("webhook endpoint")
        verbose_name_plural = _("webhook endpoints")
        ordering = ["name"]

    def __str__(self):
        return self.name

    def clean(self):
        from .webhooks import validate_endpoint

        validate_endpoint(self)


class WebhookDelivery(models.Model):
    """One event sent (or to be sent) to one endpoint, with the answer of each attempt."""

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        SENDING = "sending", _("Sending")
        DELIVERED = "delivered", _("Delivered")
        FAILED = "failed", _("Failed")

    public_id = models.UUIDField(_("id"), default=uuid.uuid4, unique=True, editable=False)
    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries", verbose_name=_("endpoint")
    )
    event = models.CharField(_("event"), max_length=30)
    lead = models.ForeignKey(
        Lead, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", verbose_name=_("lead")
    )
    body = models.TextField(_("body"))
    status = models.CharField(_("status"), max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    response_status = models.PositiveSmallIntegerField(_("answer status"), null=True, blank=True)
    response_body = models.TextField(_("answer"), blank=True)
    error = models.TextField(_("error"), blank=True)
    next_attempt_at = models.DateTimeField(_("next attempt"), null=True, blank=True)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    delivered_at = models.DateTimeField(_("delivered"), null=True, blank=True)

    class Meta:
        verbose_name = _("webhook delivery")
        verbose_name_plural = _("webhook deliveries")
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="webhookdelivery_due_idx")]

    def __str__(self):
        return f"{self.event} → {self.endpoint} · {self.get_status_display()}"


class LeadRuleMatches(models.Model):
    """Which rules of a ruleset a lead matched when last evaluated for the reports: bit
    ``i`` of ``mask`` is the ruleset's i-th active rule (in rule order). Refreshed in the
    background (``leads.reports.rule_matches_refresh``), so the dashboard's rule
    effectiveness is a cheap aggregate over a million leads."""

    lead = models.OneToOneField(Lead, on_delete=models.CASCADE, primary_key=True, related_name="rule_matches")
    ruleset = models.ForeignKey("scoring.Ruleset", on_delete=models.CASCADE, related_name="+", db_index=False)
    mask = models.BigIntegerField(default=0)
    computed_at = models.DateTimeField()

    class Meta:
        verbose_name = _("rule matches of a lead")
        verbose_name_plural = _("rule matches of leads")

    def __str__(self):
        return f"{self.lead_id} · {self.mask:b}"


class LeadSearch(models.Model):
    """What the search reads of a lead (PostgreSQL): the unaccented, upper-cased name,
    company and email, and the phone, with trigram indexes. Kept by triggers in step
    with the lead (migration 0016), on a table of its own so that the lead's own writes
    (a rescoring updates a million of them) never touch those indexes. Unused elsewhere."""

    lead = models.OneToOneField(Lead, on_delete=models.CASCADE, primary_key=True, related_name="+")
    document = models.TextField()
    phone = models.TextField()

    class Meta:
        verbose_name = _("search entry of a lead")
        verbose_name_plural = _("search entries of leads")

    def __str__(self):
        return self.document


class RuleMatchDay(models.Model):
    """The rule matches summed per day of capture (local time) and rule, with the
    outcomes of those leads, as of ``computed_at``: rebuilt after each refresh of the
    rule matches (``leads.reports.rule_match_days_rebuild``), so the dashboard's rule
    effectiveness over a million leads adds up a few thousand rows instead of joining
    every lead with its matches. ``rule_index`` -1 holds the day's leads that have
    matches at all (the coverage)."""

    ruleset = models.ForeignKey("scoring.Ruleset", on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    rule_index = models.SmallIntegerField()
    leads = models.IntegerField(default=0)
    qualified = models.IntegerField(default=0)
    converted = models.IntegerField(default=0)
    good_fit = models.IntegerField(default=0)
    bad_fit = models.IntegerField(default=0)
    computed_at = models.DateTimeField()

    class Meta:
        verbose_name = _("rule matches of a day")
        verbose_name_plural = _("rule matches per day")
        constraints = [
            models.UniqueConstraint(fields=["ruleset", "day", "rule_index"], name="rule_match_day_unique"),
        ]

    def __str__(self):
        return f"{self.day} · {self.rule_index}: {self.leads}"
