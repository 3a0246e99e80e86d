from django.contrib import admin, messages
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from . import embed, services
from .models import Consent, Form, Lead, LeadEvent, Product, Reason, ServiceArea, Source, Submission


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
class FormAdmin(admin.ModelAdmin):
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
            embed.snippet(obj),
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


# --- Insights: spend, audit, suppression, webhooks --------------------------------------------

from .models import AuditLog, SpendRecord, Suppression, WebhookDelivery, WebhookEndpoint  # noqa: E402


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


@admin.register(Suppression)
class SuppressionAdmin(_ReadOnlyAdmin):
    list_display = ["email_hash", "reason", "created_at"]
    list_filter = ["reason"]
    search_fields = ["email_hash"]


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
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
        self.message_user(request, _("%(count)s deliveries will be retried.") % {"count": retried})


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(_ReadOnlyAdmin):
    list_display = ["created_at", "endpoint", "event", "status", "attempts", "response_status", "delivered_at"]
    list_filter = ["status", "event", "endpoint"]
    search_fields = ["public_id"]
    list_select_related = ["endpoint"]
    date_hierarchy = "created_at"
    readonly_fields = ["public_id", "endpoint", "event", "lead", "body", "status", "attempts", "response_status",
                       "response_body", "error", "next_attempt_at", "created_at", "delivered_at"]
