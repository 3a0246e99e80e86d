from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import models
from django.http import FileResponse, Http404, JsonResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import escape, format_html
from django.utils.text import capfirst
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from . import embed, hotcache, importer, services
from .forms import FormAdminForm
from .models import (
    AssignmentRule,
    Consent,
    Form,
    ImportJob,
    Lead,
    LeadEvent,
    Product,
    Reason,
    ServiceArea,
    Source,
    Submission,
)


class _ForgetsCaptureCache:
    """For models the capture path caches per process for a few seconds
    (leads/hotcache.py): this process sees an admin change at once, the others within
    that bound."""

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        hotcache.forget_all()

    def delete_model(self, request, obj):
        super().delete_model(request, obj)
        hotcache.forget_all()


@admin.register(Source)
class SourceAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "channel", "active"]
    list_filter = ["channel", "active"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "keywords", "active"]
    list_filter = ["active"]
    search_fields = ["name", "slug", "keywords"]
    prepopulated_fields = {"slug": ["name"]}


@admin.register(ServiceArea)
class ServiceAreaAdmin(admin.ModelAdmin):
    list_display = ["name", "country", "state", "city", "active"]
    list_filter = ["country", "state", "active"]
    search_fields = ["name", "city"]


@admin.register(Reason)
class ReasonAdmin(admin.ModelAdmin):
    list_display = ["label", "slug", "kind", "active"]
    list_filter = ["kind", "active"]
    search_fields = ["label", "slug"]
    prepopulated_fields = {"slug": ["label"]}


@admin.register(Form)
class FormAdmin(_ForgetsCaptureCache, admin.ModelAdmin):
    form = FormAdminForm
    # A success URL typed without a scheme is https (Django 6's default, said now).
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    list_display = ["name", "slug", "source", "consent_required", "active", "created_at"]
    list_filter = ["active", "source", "consent_required"]
    search_fields = ["name", "slug"]
    list_select_related = ["source"]
    prepopulated_fields = {"slug": ["name"]}
    readonly_fields = ["endpoint", "embed_snippet", "created_at"]
    fieldsets = [
        (None, {"fields": ["name", "slug", "source", "default_interest", "active"]}),
        (_("Fields"), {"fields": ["fields", "required_fields", "honeypot_field"]}),
        (_("After submitting"), {"fields": ["success_url", "thank_you_message"]}),
        (_("Consent"), {"fields": ["consent_text", "consent_version", "consent_required"]}),
        (_("Embedding"), {"fields": ["allowed_origins", "endpoint", "embed_snippet", "created_at"]}),
    ]

    @admin.display(description=_("endpoint"))
    def endpoint(self, obj):
        return embed.endpoint_url(obj) if obj.pk else "—"

    @admin.display(description=_("embed snippet"))
    def embed_snippet(self, obj):
        if not obj.pk:
            return _("Save the form to get its snippet.")
        return format_html(
            '<p>{}</p><textarea readonly rows="18" style="width:100%;font-family:monospace" '
            'onclick="this.select()">{}</textarea>',
            _("Paste this into the landing page. The form works with JavaScript off; the script is optional."),
            # Escaped even though it is rendered markup: a </textarea> in it (the message field's) would
            # end this box and the rest would become part of the admin page.
            escape(embed.snippet(obj)),
        )


@admin.register(Submission)
class SubmissionAdmin(admin.ModelAdmin):
    list_display = ["received_at", "form", "status", "lead", "created_lead", "ip", "attempts"]
    list_filter = ["status", "form", "created_lead"]
    search_fields = ["lead__email", "ip", "public_id"]
    list_select_related = ["form", "lead"]
    date_hierarchy = "received_at"
    actions = ["replay"]
    readonly_fields = [
        "public_id", "form", "payload", "content_type", "ip", "user_agent", "referrer", "origin",
        "idempotency_key", "status", "errors", "dropped_keys", "lead", "created_lead", "attempts",
        "received_at", "processed_at",
    ]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.action(description=_("Process the selected submissions again"), permissions=["view"])
    def replay(self, request, queryset):
        counts = {}
        for submission in queryset.exclude(status=Submission.Status.PROCESSED).select_related("form"):
            result = services.submission_process(submission=submission)
            counts[result.status] = counts.get(result.status, 0) + 1
        summary = ", ".join(f"{status}: {count}" for status, count in sorted(counts.items())) or _("nothing to do")
        self.message_user(request, _("Processed again: %(summary)s") % {"summary": summary}, messages.INFO)


@admin.register(Consent)
class ConsentAdmin(admin.ModelAdmin):
    list_display = ["created_at", "lead", "action", "version", "form", "ip"]
    list_filter = ["action", "form", "version"]
    search_fields = ["lead__email"]
    list_select_related = ["lead", "form"]
    raw_id_fields = ["lead", "submission"]

    # The ledger is written by the services only.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class LeadEventInline(admin.TabularInline):
    model = LeadEvent
    fields = ["created_at", "kind", "actor", "from_status", "to_status", "reason", "note", "data"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ["-created_at", "-id"]

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Lead)
class LeadAdmin(admin.ModelAdmin):
    list_display = [
        "__str__", "email", "company", "state", "status", "temperature", "score", "owner", "source", "created_at",
    ]
    list_filter = ["status", "temperature", "status_set_by", "source", "form", "state", "owner", "reason"]
    search_fields = ["email", "first_name", "last_name", "company", "phone"]
    list_select_related = ["owner", "source"]
    date_hierarchy = "created_at"
    raw_id_fields = ["owner"]
    inlines = [LeadEventInline]
    # Status, score and ownership change only through the services (triage UI, API, rules).
    readonly_fields = [
        "status", "status_set_by", "status_changed_by", "reason", "reason_note", "score", "temperature",
        "owner", "deal_value", "created_at", "updated_at", "qualified_at", "disqualified_at",
        "out_of_focus_at", "converted_at", "last_activity_at", "requalify_at",
    ]
    fieldsets = [
        (_("Contact"), {"fields": ["email", "first_name", "last_name", "phone"]}),
        (_("Company"), {"fields": ["company", "job_title", "company_size", "country", "state", "city"]}),
        (_("Interest"), {"fields": ["interest", "budget", "budget_currency", "message", "attributes"]}),
        (_("Origin"), {"fields": [
            "source", "form", "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content",
        ]}),
        (_("Qualification"), {"fields": [
            "status", "status_set_by", "status_changed_by", "reason", "reason_note", "score", "temperature",
            "owner", "deal_value",
        ]}),
        (_("Dates"), {"fields": [
            "created_at", "updated_at", "qualified_at", "disqualified_at", "out_of_focus_at",
            "converted_at", "last_activity_at", "requalify_at",
        ]}),
    ]

    def save_model(self, request, obj, form, change):
        fields = {name: form.cleaned_data[name] for name in services.CONTACT_FIELDS if name in form.cleaned_data}
        fields["email"] = fields.get("email") or None
        if change:
            updated = services.lead_update_contact(lead=obj, actor=request.user, fields=fields)
            obj.refresh_from_db()
            return updated
        created = services.lead_create(
            actor=request.user, source=form.cleaned_data.get("source"), form=form.cleaned_data.get("form"),
            attributes=form.cleaned_data.get("attributes"), **fields,
        )
        obj.pk = created.pk
        obj.refresh_from_db()
        return created


@admin.register(LeadEvent)
class LeadEventAdmin(admin.ModelAdmin):
    list_display = ["created_at", "lead", "kind", "actor", "from_status", "to_status", "reason"]
    list_filter = ["kind", "to_status"]
    search_fields = ["lead__email", "note"]
    list_select_related = ["lead", "actor", "reason"]
    raw_id_fields = ["lead"]

    # The timeline is append-only.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


# --- CSV import from admin: upload, column mapping, progress, report -----------------------


class ImportUploadForm(forms.Form):
    form = forms.ModelChoiceField(
        label=_("Form"), queryset=Form.objects.filter(active=True).select_related("source"),
        help_text=_("The leads count as coming from this form and its source; its fields are the ones a column "
                    "may go to."),
    )
    file = forms.FileField(label=_("CSV file"), help_text=_(
        "UTF-8 or Windows (cp1252) encoding, columns separated by “,” or “;”, with a header line."))
    empty_values = forms.CharField(
        label=_("Values read as empty"), required=False, initial="Selecione, Select, -",
        help_text=_("Comma-separated placeholders a spreadsheet uses for “nothing chosen” (any case or accents)."),
    )

    def clean_empty_values(self):
        return [value.strip() for value in self.cleaned_data["empty_values"].split(",") if value.strip()]


@admin.register(ImportJob)
class ImportJobAdmin(admin.ModelAdmin):
    """Imports run by a Celery worker; the page of a job is its mapping step, then its
    progress and report. The database row is the job: a sweep re-queues what no worker
    took and resumes what a dead worker left."""

    list_display = ["number", "file_name", "form", "status", "progress_display", "rows_done", "created_count",
                    "updated_count", "rejected_count", "created_by", "created_at"]
    list_filter = ["status", "form"]
    list_select_related = ["form", "created_by"]
    search_fields = ["file_name"]
    date_hierarchy = "created_at"
    actions = ["retry"]

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description=_("import"), ordering="pk")
    def number(self, obj):
        return f"#{obj.pk}"

    @admin.display(description=_("progress"))
    def progress_display(self, obj):
        return f"{obj.progress}%"

    @admin.action(description=_("Retry the selected failed imports"), permissions=["add"])
    def retry(self, request, queryset):
        retried = sum(importer.import_job_retry(job=job) for job in queryset.filter(status=ImportJob.Status.FAILED))
        if retried:
            self.message_user(request, ngettext(
                "%(count)d failed import will be retried: it resumes after its last imported row.",
                "%(count)d failed imports will be retried: each resumes after its last imported row.",
                retried) % {"count": retried}, messages.SUCCESS)
        else:
            self.message_user(request, _("None of the selected imports has failed: nothing to retry."),
                              messages.WARNING)

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<int:pk>/mapping/", view(self.mapping_view), name="leads_importjob_mapping"),
            path("<int:pk>/progress/", view(self.progress_view), name="leads_importjob_progress"),
            path("<int:pk>/progress.json", view(self.progress_json), name="leads_importjob_progress_json"),
            path("<int:pk>/rejected.csv", view(self.rejected_view), name="leads_importjob_rejected"),
            path("<int:pk>/retry/", view(self.retry_view), name="leads_importjob_retry"),
            *super().get_urls(),
        ]

    def _job(self, request, pk):
        job = get_object_or_404(ImportJob.objects.select_related("form__source", "created_by"), pk=pk)
        if not self.has_view_permission(request, job):
            raise PermissionDenied
        return job

    def _context(self, request, title, **values):
        return {**self.admin_site.each_context(request), "opts": self.opts, "title": title, **values}

    def add_view(self, request, form_url="", extra_context=None):
        """Step 1: the upload. The file is stored and its header read; then the mapping."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        upload = ImportUploadForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and upload.is_valid():
            try:
                job = importer.import_job_create(
                    form=upload.cleaned_data["form"], upload=upload.cleaned_data["file"], created_by=request.user,
                    empty_values=upload.cleaned_data["empty_values"],
                )
            except importer.ImportFileError as exc:
                upload.add_error("file", str(exc))
            else:
                return redirect("admin:leads_importjob_mapping", job.pk)
        return TemplateResponse(request, "admin/leads/importjob/upload.html", self._context(
            request, _("Import leads from a CSV file"), upload=upload, media=self.media + upload.media,
        ))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        if str(object_id).isdigit():
            return redirect("admin:leads_importjob_progress", int(object_id))
        raise Http404

    def mapping_view(self, request, pk):
        """Step 2: the detected header, a select per column (mapped by its name), a preview."""
        job = self._job(request, pk)
        if job.status != ImportJob.Status.MAPPING:
            return redirect("admin:leads_importjob_progress", job.pk)
        if not self.has_add_permission(request):
            raise PermissionDenied
        choices = importer.field_choices(job.form)
        columns = list(job.columns)
        error = ""
        confirm = False  # the mapping leaves a required field without a column: start only if confirmed
        if request.method == "POST":
            columns = [request.POST.get(f"column-{position}", "") or None for position in range(len(job.header))]
            try:
                importer.check_columns(job.header, columns, job.form)
                if importer.missing_required(job.form, columns) and not request.POST.get("confirm_missing"):
                    confirm = True
                else:
                    importer.import_job_start(job=job, columns=columns)
                    return redirect("admin:leads_importjob_progress", job.pk)
            except importer.ImportFileError as exc:
                error = str(exc)
        try:
            csv_file = importer.CsvFile(job.path, encoding=job.encoding or None, delimiter=job.delimiter or None)
            preview = csv_file.preview(5)
        except importer.ImportFileError as exc:
            preview, error = [], str(exc)
        rows = [{"position": position, "name": name, "field": columns[position] if position < len(columns) else None,
                 "samples": [cells[position] for cells in preview if position < len(cells)]}
                for position, name in enumerate(job.header)]
        missing = importer.missing_required(job.form, columns)
        return TemplateResponse(request, "admin/leads/importjob/mapping.html", self._context(
            request, _("Import #%(job)s: match the columns to lead fields") % {"job": job.pk},
            job=job, rows=rows, choices=choices, error=error, confirm=confirm and bool(missing),
            missing=", ".join(f"“{capfirst(label)}” ({key})" for key, label in missing),
        ))

    def progress_view(self, request, pk):
        """Step 3: the progress bar (the page polls the job's row), then the report."""
        job = self._job(request, pk)
        if job.status == ImportJob.Status.MAPPING:
            return redirect("admin:leads_importjob_mapping", job.pk)
        error, error_details = importer.job_error(job)
        return TemplateResponse(request, "admin/leads/importjob/progress.html", self._context(
            request, _("Import #%(job)s: %(file)s") % {"job": job.pk, "file": job.file_name},
            job=job, state=import_job_state(job), rejected_sample=[
                {"line": line, "errors": errors} for line, errors in job.rejected_sample],
            error=error, error_details=error_details,
            can_retry=job.status == ImportJob.Status.FAILED and self.has_add_permission(request),
        ))

    def retry_view(self, request, pk):
        """The progress page's "Retry" button: a failed job goes back to pending."""
        job = self._job(request, pk)
        if request.method != "POST":
            return redirect("admin:leads_importjob_progress", job.pk)
        if not self.has_add_permission(request):
            raise PermissionDenied
        if importer.import_job_retry(job=job):
            self.message_user(request, _("The import will be retried: it resumes after its last imported row."),
                              messages.SUCCESS)
        return redirect("admin:leads_importjob_progress", job.pk)

    def progress_json(self, request, pk):
        return JsonResponse(import_job_state(self._job(request, pk)))

    def rejected_view(self, request, pk):
        """The rejected rows, as the file had them, with their line and errors."""
        job = self._job(request, pk)
        if not job.rejected_path:
            raise Http404
        try:
            handle = open(job.rejected_path, "rb")  # noqa: SIM115 - FileResponse closes it
        except OSError as exc:
            raise Http404 from exc
        name = importer.rejected_path_for(job.file_name).name
        return FileResponse(handle, as_attachment=True, filename=name, content_type="text/csv; charset=utf-8")


def import_job_state(job):
    """What the progress page shows, as JSON for its polling."""
    now = timezone.now()
    last = job.heartbeat_at or job.started_at
    return {
        "status": job.status, "status_label": str(job.get_status_display()), "progress": job.progress,
        "rows": job.rows_done, "created": job.created_count, "updated": job.updated_count,
        "rejected": job.rejected_count, "skipped": job.skipped_count,
        "finished": job.status in (ImportJob.Status.DONE, ImportJob.Status.FAILED),
        "waiting": job.status == ImportJob.Status.PENDING
        and (now - (job.heartbeat_at or job.created_at)).total_seconds() > importer.PENDING_GRACE_SECONDS,
        "stalled": job.status == ImportJob.Status.RUNNING and last is not None
        and (now - last).total_seconds() > importer.STALLED_AFTER_SECONDS,
        "error": importer.job_error(job)[0],
        "rejected_url": reverse("admin:leads_importjob_rejected", args=[job.pk]) if job.rejected_path else "",
    }


@admin.register(AssignmentRule)
class AssignmentRuleAdmin(admin.ModelAdmin):
    list_display = ["name", "order", "active", "states", "interest_keywords", "max_open_leads", "last_assigned"]
    list_editable = ["order", "active"]
    list_filter = ["active"]
    search_fields = ["name", "states", "interest_keywords"]
    filter_horizontal = ["reps"]
    list_select_related = ["last_assigned"]
    readonly_fields = ["last_assigned"]
    fieldsets = [
        (None, {"fields": ["name", "order", "active"]}),
        (_("Which leads"), {"fields": ["states", "interest_keywords"]}),
        (_("Who gets them"), {"fields": ["reps", "max_open_leads", "last_assigned"]}),
    ]

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        if db_field.name == "reps":
            from . import selectors

            kwargs["queryset"] = selectors.sales_people().order_by("username")
        return super().formfield_for_manytomany(db_field, request, **kwargs)


# --- Insights: spend, audit, suppression, webhooks --------------------------------------------

from .models import AuditLog, SpendRecord, WebhookDelivery, WebhookEndpoint  # noqa: E402


@admin.register(SpendRecord)
class SpendRecordAdmin(admin.ModelAdmin):
    list_display = ["month", "source", "utm_campaign", "amount", "currency", "note"]
    list_filter = ["source", "month"]
    search_fields = ["utm_campaign", "note"]
    list_select_related = ["source"]
    date_hierarchy = "month"
    exclude = ["created_by"]

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)


class _ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(AuditLog)
class AuditLogAdmin(_ReadOnlyAdmin):
    """Readable by superusers only: no group is given its permissions."""

    list_display = ["created_at", "action", "actor", "via", "lead_ref", "count"]
    list_filter = ["action", "via", "created_at"]
    search_fields = ["lead_ref", "actor__username"]
    list_select_related = ["actor"]
    date_hierarchy = "created_at"

    def has_view_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_superuser

    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_superuser


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(_ForgetsCaptureCache, admin.ModelAdmin):
    list_display = ["name", "url", "active", "paused_at", "consecutive_failures", "owner"]
    list_filter = ["active"]
    search_fields = ["name", "url"]
    list_select_related = ["owner"]
    readonly_fields = ["paused_at", "consecutive_failures", "created_at"]
    actions = ["resume"]

    @admin.action(description=_("Resume and retry failed deliveries"))
    def resume(self, request, queryset):
        from . import webhooks

        retried = sum(webhooks.webhook_endpoint_resume(endpoint=endpoint) for endpoint in queryset)
        self.message_user(request, ngettext("%(count)s delivery will be retried.",
                                            "%(count)s deliveries will be retried.", retried) % {"count": retried})


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(_ReadOnlyAdmin):
    list_display = ["created_at", "endpoint", "event", "status", "attempts", "response_status", "delivered_at"]
    list_filter = ["status", "event", "endpoint"]
    search_fields = ["public_id"]
    list_select_related = ["endpoint"]
    date_hierarchy = "created_at"
    readonly_fields = ["public_id", "endpoint", "event", "lead", "body", "status", "attempts", "response_status",
                       "response_body", "error", "next_attempt_at", "created_at", "delivered_at"]
